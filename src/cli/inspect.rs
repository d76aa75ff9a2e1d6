use std::path::PathBuf;
use std::process::ExitCode;

use toolhost::policy::{CapabilityRow, Coverage};
use toolhost::{Access, Policy, Tool};

use super::CliHostConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The tool component (.wasm)
    tool: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Show what this policy file grants the tool against what it requests
    #[arg(long)]
    policy: Option<PathBuf>,
}

pub async fn run(config: &CliHostConfig, args: Args) -> anyhow::Result<ExitCode> {
    let policy = match &args.policy {
        // Inspecting must show a tool the policy would refuse: report, don't refuse.
        Some(path) => Policy::load(path)?.on_ungranted(toolhost::OnUngranted::DenyAtUse),
        None => Policy::deny_all(),
    };
    let host = config.host(policy).await?;
    let tool = host.load_tool(&args.tool).await?;
    let rows = args.policy.as_ref().map(|_| toolhost::policy::compare(&tool.descriptor().capabilities, tool.grants()));
    if args.json {
        let mut report = report(&tool);
        if let Some(rows) = &rows {
            report["capabilities"] = serde_json::to_value(rows)?;
            report["limits"] = serde_json::to_value(tool.grants().limits)?;
            report["pinned"] = tool.grants().sha256.is_some().into();
            report["on_upgrade"] = tool.grants().on_upgrade.as_str().into();
            report["outside_transaction"] = serde_json::to_value(outside_transaction(tool.grants()))?;
            report["unpinned_sensitive_grants"] = serde_json::to_value(match tool.grants().sha256 {
                Some(_) => Vec::new(),
                None => tool.grants().identity_sensitive(),
            })?;
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&tool));
        if let Some(rows) = &rows {
            print!("{}", render_table(rows, &tool));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report(tool: &Tool) -> serde_json::Value {
    serde_json::json!({
        "descriptor": tool.descriptor(),
        "kind": tool.kind(),
        "sha256": tool.digest(),
        "path": tool.path(),
    })
}

/// The requested-vs-granted table.
fn render_table(rows: &[CapabilityRow], tool: &Tool) -> String {
    use std::fmt::Write;
    let mut out = String::from("\nrequested vs granted:\n");
    let cell = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let width =
        |f: &dyn Fn(&CapabilityRow) -> String, min: usize| rows.iter().map(|r| f(r).len()).max().unwrap_or(0).max(min);
    let w_req = width(&|r| cell(&r.requested), "requested".len());
    let w_grant = width(&|r| cell(&r.granted), "granted".len());
    let _ = writeln!(out, "  {:<11} {:<w_req$}  {:<w_grant$}  status", "capability", "requested", "granted");
    for r in rows {
        let status = match r.coverage {
            Coverage::Granted => "granted",
            Coverage::Partial => "PARTIAL (less access than requested)",
            Coverage::Denied => "DENIED",
            Coverage::Unrequested => "granted, not requested",
        };
        let _ = writeln!(
            out,
            "  {:<11} {:<w_req$}  {:<w_grant$}  {status}",
            r.capability,
            cell(&r.requested),
            cell(&r.granted)
        );
    }
    if rows.is_empty() {
        let _ = writeln!(out, "  nothing requested, nothing granted");
    }
    let limits = tool.grants().limits;
    let fuel = limits.fuel.map_or("unmetered".to_owned(), |f| f.to_string());
    let _ = writeln!(
        out,
        "\nlimits: memory {} MiB, cpu {} ms per call, fuel {fuel}, output {} bytes",
        limits.memory_bytes.div_ceil(1 << 20),
        limits.cpu_time.as_millis(),
        limits.max_output_bytes
    );
    out.push_str(&render_durability(tool.grants()));
    let upgrade = match tool.grants().on_upgrade {
        toolhost::OnUpgrade::Snapshot => "restore the last snapshot into the new component (replay if none)",
        toolhost::OnUpgrade::Replay => "replay the tool's steps under the new component",
        toolhost::OnUpgrade::Refuse => "refuse the new component",
    };
    let _ = writeln!(
        out,
        "on_upgrade: {} (a session that ran another component of this tool: {upgrade})",
        tool.grants().on_upgrade
    );
    let sensitive = tool.grants().identity_sensitive();
    let pin = match &tool.grants().sha256 {
        Some(_) => "pinned (matches)".to_owned(),
        None if sensitive.is_empty() => "not pinned".to_owned(),
        None => format!(
            "NOT PINNED, yet granted {}: any component named `{}` gets these grants; pin it with sha256 = \"{}\"",
            sensitive.join(", "),
            tool.name(),
            tool.digest()
        ),
    };
    let _ = writeln!(out, "sha256: {pin}");
    out
}

/// Host preopens a tool is granted: the session's journal does not cover them.
fn outside_transaction(grants: &toolhost::ToolGrants) -> Vec<String> {
    grants.filesystem.iter().map(|p| format!("{} ({}, host {})", p.guest, access(p.access), p.host.display())).collect()
}

/// What replay and crash recovery cover for the granted effects.
fn render_durability(grants: &toolhost::ToolGrants) -> String {
    let mut out = String::new();
    if !grants.network.allow.is_empty() {
        out.push_str(&format!(
            "http: journaled (responses and request bodies up to {} bytes); replay sends nothing; each request \
             carries an Idempotency-Key, so the one in flight at a crash can be deduplicated by the server\n",
            grants.network.max_response_bytes
        ));
    }
    for preopen in outside_transaction(grants) {
        out.push_str(&format!(
            "OUTSIDE THE SESSION'S TRANSACTION: {preopen}: a replayed step reads it as it is now, and what a \
             step writes there stays written if the step never commits\n"
        ));
    }
    out
}

fn access(a: Access) -> &'static str {
    match a {
        Access::Read => "read",
        Access::ReadWrite => "read-write",
    }
}

fn render(tool: &Tool) -> String {
    use std::fmt::Write;
    let d = tool.descriptor();
    let caps = &d.capabilities;
    let mut out = String::new();
    let kind = match tool.kind() {
        toolhost::ToolKind::Plain => "plain (no snapshots)",
        toolhost::ToolKind::Stateful => "stateful (snapshot/restore)",
        toolhost::ToolKind::Stateless => "stateless (declared; never replayed)",
    };
    let _ = writeln!(out, "{} {}\n  {}\n", d.name, d.version, d.description);
    let _ = writeln!(out, "kind:    {kind}");
    let _ = writeln!(out, "sha256:  {}", tool.digest());
    let _ = writeln!(out, "\nrequested capabilities:");
    let mut any = false;
    for r in &caps.state {
        let _ = writeln!(out, "  state       {} ({})", r.namespace, access(r.access));
        any = true;
    }
    for m in &caps.models {
        let _ = writeln!(out, "  model       {m}");
        any = true;
    }
    for r in &caps.filesystem {
        let _ = writeln!(out, "  filesystem  {} ({})", r.guest_path, access(r.access));
        any = true;
    }
    for h in &caps.network {
        let _ = writeln!(out, "  network     {h}");
        any = true;
    }
    for v in &caps.env {
        let _ = writeln!(out, "  env         {v}");
        any = true;
    }
    if !any {
        let _ = writeln!(out, "  none");
    }
    let schema = serde_json::to_string_pretty(&d.input_schema).unwrap_or_default();
    let _ = writeln!(out, "\ninput schema:\n{schema}");
    out
}
