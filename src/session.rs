//! A session: the unit of isolation. It owns one instance per tool it has called, created on
//! first use and never shared with another session, and its tools' state lives under its id.

use std::collections::HashMap;

use crate::error::CallError;
use crate::host::Host;
use crate::instance::Instance;
use crate::tool::Tool;

/// A sequence of tool calls with its own instances and state. Calls take `&mut self`: a
/// session runs one step at a time, while many sessions run concurrently.
pub struct Session {
    id: String,
    host: Host,
    instances: HashMap<String, Instance>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("live_instances", &self.instances.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(id: String, host: Host) -> Self {
        Self { id, host, instances: HashMap::new() }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Tools with a live instance in this session.
    pub fn live_instances(&self) -> impl Iterator<Item = &str> {
        self.instances.keys().map(String::as_str)
    }

    /// Calls `tool` with `input` as one step: the input is validated against the tool's
    /// schema, the call runs under the tool's limits, and its state writes commit only if it
    /// ran to completion. A trap, deadline or memory overrun drops the instance (the next
    /// call starts a fresh one) and commits nothing; other sessions are unaffected.
    pub async fn call(&mut self, tool: &Tool, input: &serde_json::Value) -> Result<serde_json::Value, CallError> {
        let name = tool.name().to_owned();
        tool.validate_input(input).map_err(|errors| CallError::InvalidInput { tool: name.clone(), errors })?;
        let input_text = input.to_string();
        self.ensure_instance(tool).await?;
        let engine = self.host.engine();
        let instance = self.instances.get_mut(&name).expect("ensured above");

        let outcome = match instance.call(engine, tool, &input_text).await {
            Ok(outcome) => outcome,
            Err(aborted) => {
                self.abort(&name, &aborted);
                return Err(aborted);
            }
        };
        let output = match outcome {
            Ok(text) => match check_output(tool, &text) {
                Ok(value) => Ok(value),
                Err(invalid) => {
                    self.abort(&name, &invalid);
                    return Err(invalid);
                }
            },
            Err(failure) => Err(CallError::Tool { tool: name.clone(), failure }),
        };

        // The call ran to completion (with output or a tool error): its memory has moved on,
        // so its state writes commit with it.
        let instance = self.instances.get_mut(&name).expect("still live");
        let writes = instance.state().take_writes();
        if !writes.is_empty() {
            let scope = instance.state().scope().clone();
            if let Err(e) = self.host.state_store().commit(&scope, writes).await {
                let error = CallError::Store { tool: name.clone(), reason: e.0 };
                self.abort(&name, &error);
                return Err(error);
            }
        }
        output
    }

    /// Starts this session's instance of `tool` now rather than on the first call, so the
    /// first call does not pay for instantiation.
    pub async fn prewarm(&mut self, tool: &Tool) -> Result<(), CallError> {
        self.ensure_instance(tool).await
    }

    async fn ensure_instance(&mut self, tool: &Tool) -> Result<(), CallError> {
        let name = tool.name();
        if self.instances.get(name).is_some_and(|i| i.digest != tool.digest()) {
            self.instances.remove(name);
        }
        if self.instances.contains_key(name) {
            return Ok(());
        }
        let engine = self.host.engine();
        if !wasmtime::Engine::same(tool.blueprint.pre.component().engine(), engine.wasmtime()) {
            return Err(CallError::Instantiate { tool: name.to_owned(), reason: "the tool was loaded by another host".into() });
        }
        let instance = Instance::new(engine, &tool.blueprint, name, &self.id, &tool.grants, self.host.state_store()).await?;
        self.instances.insert(name.to_owned(), instance);
        Ok(())
    }

    /// Drops the instance of `tool` with everything its aborted call did.
    fn abort(&mut self, tool: &str, why: &CallError) {
        tracing::warn!(session = %self.id, tool, error = %why, "call aborted; dropping the instance");
        self.instances.remove(tool);
    }
}

fn check_output(tool: &Tool, text: &str) -> Result<serde_json::Value, CallError> {
    let limit = tool.grants.limits.max_output_bytes;
    if text.len() > limit {
        return Err(CallError::OutputTooLarge { tool: tool.name().to_owned(), bytes: text.len(), limit });
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| CallError::InvalidOutput { tool: tool.name().to_owned(), reason: format!("not JSON: {e}") })?;
    tool.validate_output(&value).map_err(|errors| CallError::InvalidOutput {
        tool: tool.name().to_owned(),
        reason: format!("does not match the output schema: {}", errors.join("; ")),
    })?;
    Ok(value)
}
