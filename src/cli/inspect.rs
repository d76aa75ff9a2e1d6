use std::path::PathBuf;
use std::process::ExitCode;

use toolhost::{Access, Policy, Tool};

use super::CliHostConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The tool component (.wasm)
    tool: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &CliHostConfig, args: Args) -> anyhow::Result<ExitCode> {
    let host = config.host(Policy::deny_all()).await?;
    let tool = host.load_tool(&args.tool).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report(&tool))?);
    } else {
        print!("{}", render(&tool));
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
