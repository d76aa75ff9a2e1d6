//! `toolhost sessions`: what the store holds, and the operations on stored sessions.

use std::process::ExitCode;

use toolhost::Policy;
use toolhost::capability::workspace::WorkspaceEntry;

use super::CliHostConfig;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List the sessions in the store
    List,
    /// Show a session's steps, state keys, workspace files, snapshots and stored bytes
    Show {
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Start a new session from step AT of session ID; prints the new session's id
    Fork {
        id: String,
        #[arg(long)]
        at: u64,
    },
    /// Rebuild a session's tool instances (restore the latest snapshot, replay the steps
    /// after it against their journals) and report how; fails if a replay diverges
    Resume {
        id: String,
        /// Tool components to bring back (the ones the session used)
        #[arg(required = true)]
        tools: Vec<std::path::PathBuf>,
        /// Grant each tool what it requests (as `call --grant-requested` did)
        #[arg(long)]
        grant_requested: bool,
    },
    /// Delete a session and everything it stored, its audit events included
    Delete {
        id: String,
        /// Keep the session's audit events (`prune` removes them once past its cutoff)
        #[arg(long)]
        keep_audit: bool,
    },
    /// Delete every session that has ended DURATION ago (no host holds it, nothing committed
    /// since; e.g. `30d`, `12h`), with its audit events and the chunks only it used
    Prune {
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
    },
    /// Write a session's workspace files out, to DIR/TOOL/PATH; DIR must be empty
    ExportFiles {
        id: String,
        dir: std::path::PathBuf,
        /// Write into DIR even if it is not empty (same-named files are replaced)
        #[arg(long)]
        overwrite: bool,
    },
}

fn when(ms: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    format!("{:.1}s ago", (now - ms).max(0) as f64 / 1000.0)
}

pub async fn run(config: &CliHostConfig, args: Args) -> anyhow::Result<ExitCode> {
    let grant_requested = matches!(args.command, Command::Resume { grant_requested: true, .. });
    let host = config.host(if grant_requested { Policy::grant_requested() } else { Policy::deny_all() }).await?;
    match args.command {
        Command::List => {
            let sessions = host.list_sessions().await?;
            if sessions.is_empty() {
                println!("no sessions in {}", config.db_label());
            }
            for s in sessions {
                let fork = s.forked_from.map(|(p, at)| format!("  (fork of {p} at step {at})")).unwrap_or_default();
                println!("{}  {:>5} steps  created {}{fork}", s.id, s.steps, when(s.created_at_ms));
            }
        }
        Command::Show { id, json } => {
            let d = host.session_details(&id).await?;
            if json {
                let steps: Vec<_> = d
                    .steps
                    .iter()
                    .map(|s| {
                        let mut step = serde_json::json!({"seq": s.seq, "tool": s.tool, "digest": s.digest, "input": s.input, "outcome": s.outcome, "journal_entries": s.journal.len()});
                        if let toolhost::store::StepOutcome::Upgraded(upgrade) = &s.outcome {
                            step["upgraded"] = serde_json::json!(upgrade);
                        }
                        step
                    })
                    .collect();
                let snapshots: Vec<_> = d
                    .snapshots
                    .iter()
                    .map(|s| serde_json::json!({"tool": s.tool, "seq": s.seq, "bytes": s.bytes, "chunks": s.chunks}))
                    .collect();
                let workspaces: serde_json::Map<String, serde_json::Value> = d
                    .workspaces
                    .iter()
                    .map(|(tool, manifest)| {
                        let files: Vec<_> = manifest
                            .iter()
                            .map(|(path, e)| match e {
                                WorkspaceEntry::Dir => serde_json::json!({"path": path, "dir": true}),
                                WorkspaceEntry::File { size, chunks } => {
                                    serde_json::json!({"path": path, "bytes": size, "chunks": chunks.len()})
                                }
                            })
                            .collect();
                        (tool.clone(), serde_json::Value::Array(files))
                    })
                    .collect();
                let replay: Vec<_> = d
                    .replay_lengths()
                    .iter()
                    .map(|r| serde_json::json!({"tool": r.tool, "snapshot": r.snapshot, "steps": r.steps}))
                    .collect();
                let report = serde_json::json!({
                    "id": d.record.id,
                    "last_step": d.record.last_step,
                    "forked_from": d.record.forked_from,
                    "steps": steps,
                    "state_keys": d.state_keys,
                    "workspace": workspaces,
                    "snapshots": snapshots,
                    "replay": replay,
                    "stored_bytes": {"steps": d.storage.step_bytes, "snapshots_logical": d.storage.snapshot_bytes},
                });
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("session {}  ({} steps)", d.record.id, d.record.last_step);
                if let Some((parent, at)) = &d.record.forked_from {
                    println!("forked from {parent} at step {at}");
                }
                println!("\nsteps:");
                for s in &d.steps {
                    let outcome = match &s.outcome {
                        toolhost::store::StepOutcome::Output(text) => text.chars().take(80).collect::<String>(),
                        toolhost::store::StepOutcome::Failed(f) => format!("error: {f}"),
                        toolhost::store::StepOutcome::Upgraded(upgrade) => {
                            println!("  {:>4}  {:<12} UPGRADED {upgrade}", s.seq, s.tool);
                            continue;
                        }
                    };
                    println!(
                        "  {:>4}  {:<12} {} -> {outcome}",
                        s.seq,
                        s.tool,
                        s.input.chars().take(60).collect::<String>()
                    );
                }
                println!("\nstate keys:");
                for (tool, namespace, key) in &d.state_keys {
                    println!("  {tool}/{namespace}/{}", key.escape_debug());
                }
                println!("\nworkspace files:");
                for (tool, manifest) in &d.workspaces {
                    for (path, entry) in manifest {
                        match entry {
                            WorkspaceEntry::Dir => println!("  {tool}/{}/", path.escape_debug()),
                            WorkspaceEntry::File { size, chunks } => {
                                println!("  {tool}/{}  {size} bytes in {} chunks", path.escape_debug(), chunks.len())
                            }
                        }
                    }
                }
                println!("\nsnapshots:");
                for s in &d.snapshots {
                    println!("  {:<12} after step {:>4}: {} bytes in {} chunks", s.tool, s.seq, s.bytes, s.chunks);
                }
                println!("\nreplay on resume (steps after the latest snapshot; none for a tool declared stateless):");
                for r in d.replay_lengths() {
                    let from = r.snapshot.map_or("no snapshot".into(), |at| format!("snapshot of step {at}"));
                    println!("  {:<12} {from}, {} steps to replay", r.tool, r.steps);
                }
                println!(
                    "\nstored: {} bytes of steps, {} bytes of snapshots (logical)",
                    d.storage.step_bytes, d.storage.snapshot_bytes
                );
            }
        }
        Command::Fork { id, at } => {
            let child = host.fork_session(&id, at).await?;
            println!("{}", child.id());
            child.close().await?;
        }
        Command::Resume { id, tools, .. } => {
            let mut session = host.open_session(&id).await?;
            println!("session {id} at step {}", session.last_step());
            for path in tools {
                let tool = host.load_tool(&path).await?;
                let Some(rebuild) = session.prewarm(&tool).await? else {
                    println!("  {:<12} already rebuilt", tool.name());
                    continue;
                };
                let from = rebuild.restored_from.map_or("no snapshot".into(), |s| format!("snapshot of step {s}"));
                let (name, replayed, elapsed) = (tool.name(), rebuild.replayed, rebuild.elapsed);
                println!("  {name:<12} {from}, {replayed} steps replayed, {elapsed:.2?}");
            }
            session.close().await?;
        }
        Command::ExportFiles { id, dir, overwrite } => {
            let written = host.export_files(&id, &dir, overwrite).await?;
            println!("wrote {written} workspace paths of {id} to {}", dir.display());
        }
        Command::Delete { id, keep_audit } => {
            let deleted = match keep_audit {
                true => host.delete_session_keeping_audit(&id).await?,
                false => host.delete_session(&id).await?,
            };
            if !deleted {
                anyhow::bail!("no session `{id}` in {}", config.db_label());
            }
            println!("deleted {id}");
        }
        Command::Prune { older_than } => {
            let report = host.prune_sessions(older_than).await?;
            for id in &report.kept_in_use {
                println!("kept {id}: a host has it open");
            }
            println!(
                "pruned {} sessions, {} audit events and {} tasks",
                report.sessions.len(),
                report.audit_events,
                report.tasks
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
