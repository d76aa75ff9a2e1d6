//! Checks on a policy's contents that its types cannot express. Each capability checks its
//! own grant; this module checks the tool's name, pin and limits and collects every problem
//! with the key path it concerns, so a loaded file can point at the line.

use super::{Policy, ToolGrants};
use crate::capability::{Issues, env, filesystem, model, network, state, valid_name, workspace};
use crate::engine::Limits;

/// Problems, each with its full key path (`tools.NAME...`).
type Found = Vec<(Vec<String>, String)>;

pub(super) fn check(policy: &Policy) -> Found {
    let mut found = Found::new();
    for (name, grants) in &policy.tools {
        let mut issues = Issues::default();
        if !valid_name(name, 64) {
            issues.push(&[], format!("tool name `{}` must be 1-64 chars of [a-z0-9_-]", name.escape_debug()));
        }
        if policy.require_pins && grants.sha256.is_none() {
            issues.push(
                &[],
                "`require_pins = true`, but this tool has no `sha256` pin (`toolhost inspect` prints a component's sha256)",
            );
        }
        check_tool(grants, &mut issues);
        let at = |key: Vec<String>| ["tools".to_owned(), name.clone()].into_iter().chain(key).collect();
        found.extend(issues.0.into_iter().map(|(key, message)| (at(key), message)));
    }
    found
}

fn check_tool(grants: &ToolGrants, issues: &mut Issues) {
    if let Some(digest) = &grants.sha256
        && (digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        issues.push(&["sha256"], "expected 64 hex digits (the component's sha256)");
    }
    state::validate(&grants.state, issues);
    model::validate(&grants.models, issues);
    network::validate(&grants.network, issues);
    filesystem::validate(&grants.filesystem, issues);
    if let Some(grant) = &grants.workspace {
        workspace::validate(grant, &grants.filesystem, issues);
    }
    env::validate(&grants.env, issues);
    check_limits(&grants.limits, issues);
}

fn check_limits(limits: &Limits, issues: &mut Issues) {
    if limits.memory_bytes == 0 {
        issues.push(&["limits", "memory_mib"], "must be at least 1");
    }
    if limits.cpu_time.is_zero() {
        issues.push(&["limits", "cpu_time_ms"], "must be at least 1");
    }
    if limits.fuel == Some(0) {
        issues.push(&["limits", "fuel"], "must be at least 1 (omit it for no fuel limit)");
    }
    if limits.wall_time.is_zero() {
        issues.push(&["limits", "wall_time_ms"], "must be at least 1");
    } else if limits.wall_time < limits.cpu_time {
        issues.push(
            &["limits", "wall_time_ms"],
            format!("must be at least cpu_time_ms ({} ms)", limits.cpu_time.as_millis()),
        );
    }
    for (key, value) in [
        ("max_output_bytes", limits.max_output_bytes),
        ("max_error_bytes", limits.max_error_bytes),
        ("max_snapshot_bytes", limits.max_snapshot_bytes),
        ("max_log_bytes_per_step", limits.max_log_bytes_per_step),
        ("max_journal_bytes", limits.max_journal_bytes),
        ("max_handles", limits.max_handles),
        ("max_audit_events_per_step", limits.max_audit_events_per_step as usize),
    ] {
        if value == 0 {
            issues.push(&["limits", key], "must be at least 1");
        }
    }
}
