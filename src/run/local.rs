//! Driving a run in the calling process (`toolhost run`, an embedding application) instead
//! of on a worker: the run still has its row, so `toolhost runs list|show|approve|cancel`
//! see and steer it, and a worker with the same agent may take it over later.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::worker::{record, watch_for_cancel};
use super::{Run, RunError, RunStatus, Runs, WorkerConfig};
use crate::agent::{Agent, AgentError, AgentEvent, AgentOutcome, GOAL_STEP, Goal, Inbox, stored_goal};
use crate::session::Session;

/// How often a run driven here looks whether it was cancelled from outside.
const CANCEL_POLL: Duration = Duration::from_millis(500);

impl Runs {
    /// Drives the run of `session` with `agent` (named `agent_name`, as a worker would name
    /// it) until it stops or suspends, here; returns its row as the drive left it.
    ///
    /// A session without a row gets one: towards `goal` when it has no steps, else towards
    /// the goal it was started with (a run begun by [`Agent::start`]). A run with a row
    /// continues with the decisions and events it holds; a failed one is tried again (e.g.
    /// with a higher turn limit); a cancelled one is refused. On Postgres the session's
    /// lease keeps workers off the run while it is driven here.
    pub async fn drive(
        &self,
        agent_name: &str,
        agent: &Agent,
        session: &mut Session,
        goal: Goal,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<(Run, AgentOutcome), RunError> {
        let run = self.attach(agent_name, session, goal).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn(watch_for_cancel(self.clone(), run.id.clone(), stop.clone(), CANCEL_POLL));
        let inbox = Inbox { decisions: run.body.decisions.clone(), signals: run.body.signals.clone(), cancelled: stop };
        let result = agent.advance(session, run.body.goal.clone(), &inbox, events).await;
        watcher.abort();
        record(&WorkerConfig::default(), self, &run.id, &result, session.lease_token()).await?;
        let outcome = result?;
        Ok((self.get(&run.id).await?, outcome))
    }

    /// The row of `session`'s run, created if it has none, ready to be driven.
    async fn attach(&self, agent_name: &str, session: &Session, goal: Goal) -> Result<Run, RunError> {
        let id = session.id();
        let Some(record) = self.store.run(id).await? else {
            let goal = match session.last_step() {
                0 => goal,
                _ => self.started_goal(session).await?,
            };
            return self.insert(id, agent_name, goal).await;
        };
        let run = Run::from_record(record)?;
        if run.agent != agent_name {
            return Err(RunError::Invalid {
                what: "run",
                reason: format!("run `{id}` is driven by the agent `{}`, not `{agent_name}`", run.agent),
            });
        }
        match run.status {
            RunStatus::Cancelled => Err(super::wrong_state(&run, "driving", "a run that was not cancelled")),
            RunStatus::Failed => {
                self.change(id, |run| {
                    run.status = RunStatus::Running;
                    run.ready_at_ms = Some(crate::store::timestamp_ms());
                    run.body.outcome = None;
                    run.body.failed_attempts = 0;
                    Ok(())
                })
                .await
            }
            _ => Ok(run),
        }
    }

    /// The goal the run in `session` was started towards, from its first step.
    async fn started_goal(&self, session: &Session) -> Result<Goal, RunError> {
        let first = self.store.last_step_of(session.id(), GOAL_STEP, 1).await?;
        first.as_ref().and_then(stored_goal).ok_or_else(|| {
            RunError::Agent(AgentError::NotAnAgentSession {
                session: session.id().to_owned(),
                reason: "its first step is not an agent's goal".into(),
            })
        })
    }
}
