//! Checks on a policy's contents that its types cannot express. Each problem comes back
//! with the key path it concerns, so a loaded file can point at the line.

use std::collections::BTreeSet;
use std::path::Component;

use super::{Policy, ToolGrants};
use crate::capability::state::MAX_NAMESPACE_CHARS;

type Issues = Vec<(Vec<String>, String)>;

fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// A guest path must be absolute and normalized: `/data`, `/srv/docs`.
fn guest_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("the guest path must be absolute, e.g. `/data`");
    }
    if path.contains('\0') {
        return Some("the guest path contains a NUL byte");
    }
    if path.len() > 1 && (path.ends_with('/') || path.contains("//")) {
        return Some("the guest path must not contain empty segments or end with `/`");
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Some("the guest path must not contain `.` or `..`");
    }
    None
}

pub(super) fn check(policy: &Policy) -> Issues {
    let mut issues = Issues::new();
    for (name, grants) in &policy.tools {
        let at = |rest: &[&str]| -> Vec<String> {
            ["tools", name.as_str()].iter().chain(rest).map(|s| s.to_string()).collect()
        };
        if !valid_name(name, 64) {
            issues.push((at(&[]), format!("tool name `{}` must be 1-64 chars of [a-z0-9_-]", name.escape_debug())));
        }
        if policy.require_pins && grants.sha256.is_none() {
            issues.push((
                at(&[]),
                "`require_pins = true`, but this tool has no `sha256` pin (`toolhost inspect` prints a component's sha256)"
                    .into(),
            ));
        }
        check_tool(grants, &at, &mut issues);
    }
    issues
}

fn check_tool(grants: &ToolGrants, at: &dyn Fn(&[&str]) -> Vec<String>, issues: &mut Issues) {
    if let Some(digest) = &grants.sha256
        && (digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        issues.push((at(&["sha256"]), "expected 64 hex digits (the component's sha256)".into()));
    }
    for namespace in grants.state.namespaces.keys() {
        if !valid_name(namespace, MAX_NAMESPACE_CHARS) {
            issues.push((
                at(&["state", "namespaces", namespace]),
                format!("namespace `{}` must be 1-{MAX_NAMESPACE_CHARS} chars of [a-z0-9_-]", namespace.escape_debug()),
            ));
        }
    }
    let quota = grants.state.quota;
    for (key, value) in [
        ("max_keys", quota.max_keys),
        ("max_value_bytes", quota.max_value_bytes),
        ("max_total_bytes", quota.max_total_bytes),
    ] {
        if value == 0 {
            issues.push((at(&["state", "quota", key]), "must be at least 1".into()));
        }
    }
    for alias in &grants.models.aliases {
        if alias.trim().is_empty() {
            issues.push((at(&["model", "aliases"]), "a model alias is empty".into()));
        }
    }
    let models = &grants.models;
    for (key, zero) in [
        ("max_tokens_per_call", models.max_tokens_per_call == Some(0)),
        ("session_token_budget", models.session_token_budget == Some(0)),
        ("calls_per_minute", models.calls_per_minute == Some(0)),
    ] {
        if zero {
            issues.push((at(&["model", key]), "must be at least 1 (omit it for no bound)".into()));
        }
    }
    if grants.network.max_response_bytes == 0 {
        issues.push((at(&["network", "max_response_bytes"]), "must be at least 1".into()));
    }
    let mut guest_paths = BTreeSet::new();
    for (i, preopen) in grants.filesystem.iter().enumerate() {
        let index = i.to_string();
        if let Some(problem) = guest_path_problem(&preopen.guest) {
            issues.push((at(&["filesystem", &index, "guest"]), problem.into()));
        } else if !guest_paths.insert(preopen.guest.as_str()) {
            issues.push((at(&["filesystem", &index, "guest"]), format!("`{}` is mapped twice", preopen.guest)));
        }
        if preopen.host.as_os_str().is_empty() {
            issues.push((at(&["filesystem", &index, "host"]), "the host directory is empty".into()));
        } else if preopen.host.components().any(|c| c == Component::ParentDir) {
            issues.push((
                at(&["filesystem", &index, "host"]),
                "the host directory must not contain `..`: name the directory itself".into(),
            ));
        }
    }
    if let Some(workspace) = &grants.workspace {
        if let Some(problem) = guest_path_problem(&workspace.guest) {
            issues.push((at(&["workspace", "guest"]), problem.into()));
        } else if let Some(preopen) = grants.filesystem.iter().find(|p| overlaps(&p.guest, &workspace.guest)) {
            issues.push((
                at(&["workspace", "guest"]),
                format!("`{}` overlaps the filesystem grant at `{}`", workspace.guest, preopen.guest),
            ));
        }
        for (key, value) in [("quota_bytes", workspace.quota_bytes), ("quota_files", workspace.quota_files)] {
            if value == 0 {
                issues.push((at(&["workspace", key]), "must be at least 1".into()));
            }
        }
    }
    for (name, value) in &grants.env {
        if !valid_env_name(name) {
            issues.push((at(&["env", name]), "a variable name must be non-empty, without `=` or NUL".into()));
        }
        match value {
            super::EnvValue::Value(v) if v.contains('\0') => {
                issues.push((at(&["env", name]), "the value contains a NUL byte".into()));
            }
            super::EnvValue::FromHost { from_host } if !valid_env_name(from_host) => {
                issues.push((at(&["env", name, "from_host"]), "not a valid variable name".into()));
            }
            _ => {}
        }
    }
    let limits = grants.limits;
    if limits.memory_bytes == 0 {
        issues.push((at(&["limits", "memory_mib"]), "must be at least 1".into()));
    }
    if limits.cpu_time.is_zero() {
        issues.push((at(&["limits", "cpu_time_ms"]), "must be at least 1".into()));
    }
    if limits.fuel == Some(0) {
        issues.push((at(&["limits", "fuel"]), "must be at least 1 (omit it for no fuel limit)".into()));
    }
    if limits.wall_time.is_zero() {
        issues.push((at(&["limits", "wall_time_ms"]), "must be at least 1".into()));
    } else if limits.wall_time < limits.cpu_time {
        issues.push((
            at(&["limits", "wall_time_ms"]),
            format!("must be at least cpu_time_ms ({} ms)", limits.cpu_time.as_millis()),
        ));
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
            issues.push((at(&["limits", key]), "must be at least 1".into()));
        }
    }
}

/// Whether one guest path lies in (or is) the other.
fn overlaps(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        let outer = outer.trim_end_matches('/');
        inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/')) || outer.is_empty()
    };
    within(a, b) || within(b, a)
}
