//! A long-running bookkeeping agent that shows resume: it reads four receipts, notes each
//! amount, adds them up and notes the total (11 model turns, 4-8 minutes with
//! the local model). Stop it with Ctrl-C or `kill -9` at any point, then continue:
//!
//!     cargo run --example resumable_agent
//!     cargo run --example resumable_agent -- --resume SESSION
//!
//! The resumed run keeps every committed step: no model turn is asked again and no tool call
//! runs twice. `cargo run -- sessions show SESSION --db .toolhost/agents.db` shows the steps.

#[path = "agents/support.rs"]
mod support;

use clap::Parser;
use toolhost::{Goal, Task};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = support::Args::parse();
    let mut goal = Goal::new("Add up the amounts of the four receipts in the receipts folder and keep notes.");
    for n in 1..=4 {
        goal = goal.with_task(Task::using(format!("Read the file receipts/{n}.txt."), "reader")).with_task(
            Task::using(format!("Save the amount paid on receipt {n} as a note titled Receipt {n}."), "notes"),
        );
    }
    goal = goal
        .with_task(Task::using("Add up the four amounts with the calculator.", "calculator"))
        .with_task(Task::using("Save the total as a note titled Receipts total.", "notes"));
    support::run(&args, goal).await
}
