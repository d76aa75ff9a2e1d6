//! A research agent, offline: it reads a document from a read-only folder, computes with the
//! calculator and keeps a note, each tool in its own sandbox, with the local model choosing
//! the inputs. Every step is committed to a SQLite session as it happens.
//!
//!     cargo run --example research_agent
//!     cargo run --example research_agent -- --resume SESSION   # after Ctrl-C or a kill
//!
//! On a fresh clone it installs the local model on first use (Qwen2.5-Coder-1.5B, a 1.1 GB
//! download; `--model small` for SmolLM2-135M), builds the tools, starts the model, runs, and
//! stops the model again.

#[path = "agents/support.rs"]
mod support;

use clap::Parser;
use toolhost::{Goal, Task};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = support::Args::parse();
    // A small local model follows a plan far better than it plans: each task names its tool
    // and the model writes the tool's input from what earlier tasks returned.
    let goal = Goal::new("Find out what the shopping list in prices.txt costs in total, and keep a note of the total.")
        .with_task(Task::using("Read the file prices.txt.", "reader"))
        .with_task(Task::using("Add up the three prices with the calculator.", "calculator"))
        .with_task(Task::using("Save the total as a note titled Shopping total.", "notes"));
    support::run(&args, goal).await
}
