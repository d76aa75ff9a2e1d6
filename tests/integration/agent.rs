//! The agent loop against a scripted model: tool calls run in their sandboxed instances, the
//! results go back to the model, the run stops on a final answer, the turn limit or the token
//! budget, and a resumed run re-sends no completed model request.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use toolhost::agent::AgentEvent;
use toolhost::model::{ChatRequest, ChatResponse, FinishReason, ModelError, ProviderFailure, Role, ToolCall, Usage};
use toolhost::store::{Durability, StepOutcome};
use toolhost::{
    Agent, AgentConfig, AgentError, Goal, Host, HostConfig, ModelProvider, Policy, SqliteStore, Stop, Task, Tool,
    ToolCalling,
};

use crate::support::{engine_config, guests};

type Script = Box<dyn Fn(usize, &ChatRequest) -> Result<ChatResponse, ModelError> + Send + Sync>;

/// Answers turn `n` (0-based over the provider's life) with `script(n, request)` and keeps
/// every request it was sent.
struct ScriptedModel {
    script: Script,
    requests: Mutex<Vec<(String, ChatRequest)>>,
}

impl ScriptedModel {
    fn new(
        script: impl Fn(usize, &ChatRequest) -> Result<ChatResponse, ModelError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self { script: Box::new(script), requests: Mutex::new(Vec::new()) })
    }

    fn requests(&self) -> Vec<(String, ChatRequest)> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl ModelProvider for ScriptedModel {
    async fn chat(&self, _alias: &str, request: &ChatRequest, call_id: &str) -> Result<ChatResponse, ModelError> {
        let n = {
            let mut requests = self.requests.lock().unwrap();
            requests.push((call_id.to_owned(), request.clone()));
            requests.len() - 1
        };
        (self.script)(n, request)
    }
}

fn usage(tokens: u32) -> Usage {
    Usage { input_tokens: tokens, output_tokens: tokens / 2 }
}

fn calls(calls: &[(&str, Value)]) -> ChatResponse {
    ChatResponse {
        text: String::new(),
        tool_calls: calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| ToolCall {
                id: format!("c{i}"),
                name: (*name).into(),
                arguments: args.to_string(),
            })
            .collect(),
        finish_reason: FinishReason::ToolCalls,
        usage: usage(10),
        model: "scripted".into(),
    }
}

fn text(text: &str) -> ChatResponse {
    ChatResponse {
        text: text.into(),
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Stop,
        usage: usage(10),
        model: "scripted".into(),
    }
}

fn host_on(db: &Path, model: Arc<ScriptedModel>) -> Host {
    let store = Arc::new(SqliteStore::open(db, Durability::Full).unwrap());
    let config = HostConfig {
        engine: engine_config(),
        policy: Policy::grant_requested(),
        models: Some(model as Arc<dyn ModelProvider>),
        ..HostConfig::default()
    };
    Host::with_store(config, store).unwrap()
}

async fn tools(host: &Host) -> Vec<Arc<Tool>> {
    vec![host.load_tool(&guests().calculator).await.unwrap(), host.load_tool(&guests().notes).await.unwrap()]
}

fn config(mode: ToolCalling) -> AgentConfig {
    AgentConfig { tool_calling: mode, ..AgentConfig::new("scripted") }
}

/// Collects the run's progress events.
fn recorder() -> (Arc<Mutex<Vec<AgentEvent>>>, impl FnMut(AgentEvent) + Send) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |e| sink.lock().unwrap().push(e))
}

fn tool_messages(request: &ChatRequest) -> Vec<String> {
    request.messages.iter().filter(|m| m.role == Role::Tool).map(|m| m.content.clone()).collect()
}

#[tokio::test]
async fn native_run_calls_two_tools_feeds_results_back_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new(|n, _| {
        Ok(match n {
            0 => calls(&[("calculator", json!({"expression": "17 * 23"}))]),
            1 => calls(&[("notes", json!({"op": "add", "title": "product", "body": "17 * 23 = 391"}))]),
            2 => calls(&[("notes", json!({"op": "search", "query": "product"}))]),
            _ => text("17 * 23 = 391, and it is noted."),
        })
    });
    let host = host_on(&dir.path().join("s.db"), model.clone());
    let agent = Agent::new(&host, config(ToolCalling::Native), tools(&host).await).unwrap();
    let mut session = host.new_session().await.unwrap();
    let (events, mut sink) = recorder();
    let outcome = agent.start(&mut session, Goal::new("Compute 17 * 23 and keep a note."), &mut sink).await.unwrap();

    assert_eq!(outcome.stop, Stop::Answer("17 * 23 = 391, and it is noted.".into()));
    assert_eq!((outcome.turns, outcome.tool_calls, outcome.tokens), (4, 3, 60));
    // goal, then (model, tool) x 3, then the answering model turn.
    let steps = session.steps(0).await.unwrap();
    let actors: Vec<&str> = steps.iter().map(|s| s.tool.as_str()).collect();
    assert_eq!(
        actors,
        ["agent.goal", "agent.model", "calculator", "agent.model", "notes", "agent.model", "notes", "agent.model"]
    );
    assert_eq!(outcome.last_step, 8);

    // Each request carries the tools' schemas and the results of the calls so far.
    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    let names: Vec<&str> = requests[0].1.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["calculator", "notes"]);
    let schema: Value = serde_json::from_str(&requests[0].1.tools[0].parameters).unwrap();
    assert_eq!(schema["required"], json!(["expression"]));
    assert_eq!(tool_messages(&requests[1].1), [r#"{"value":391.0}"#]);
    let last = tool_messages(&requests[3].1);
    assert_eq!(last.len(), 3);
    assert!(last[2].contains(r#""title":"product""#), "{last:?}");
    // Call ids are stable per step, so a provider can use them as idempotency keys.
    assert_eq!(requests[0].0, format!("{}:2:agent", session.id()));

    let events = events.lock().unwrap();
    let tools_called: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCall { tool, .. } => Some(tool.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(tools_called, ["calculator", "notes", "notes"]);
    assert!(events[0].to_string().contains("model turn 1"), "{}", events[0]);
}

#[tokio::test]
async fn constrained_run_uses_a_schema_with_an_enum_of_tools_and_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new(|n, request| {
        let schema: Value = serde_json::from_str(request.response_schema.as_deref().unwrap()).unwrap();
        assert!(request.tools.is_empty(), "constrained requests carry no native tools");
        let reply = match n {
            0 => {
                // Task 1 names the calculator: the schema allows only it.
                assert_eq!(schema["properties"]["tool"]["const"], "calculator", "{schema}");
                // The model names the tool before it writes the input: keys keep their order.
                let text = request.response_schema.as_deref().unwrap();
                assert!(text.find(r#""tool""#).unwrap() < text.find(r#""input""#).unwrap(), "{text}");
                // Free strings are bounded by the turn's tokens (400 / 4), so a rambling model
                // still closes its JSON; the tool's own schema has no bound.
                let expression = &schema["properties"]["input"]["properties"]["expression"];
                assert_eq!(expression["maxLength"], 100, "{schema}");
                // The prompt shows the input's shape and its documentation.
                let system = &request.messages[0].content;
                assert!(system.contains("- calculator: Evaluates"), "{system}");
                assert!(system.contains(r#"    {"expression": string}"#), "{system}");
                assert!(system.contains("      expression: Numbers,"), "{system}");
                json!({"tool": "calculator", "input": {"expression": "2 + 3"}})
            }
            1 => {
                assert_eq!(schema["properties"]["tool"]["const"], "notes", "{schema}");
                // A tagged input: one line per shape, fields in the order the tool declares them.
                let system = &request.messages[0].content;
                let add = r#"    {"op": "add", "title": string, "body": string, "tags"?: [string]}  (Adds a note"#;
                assert!(system.contains(add), "{system}");
                assert!(system.contains(r#"    {"op": "get", "id": integer}  (Returns one note.)"#), "{system}");
                let add_schema = &schema["properties"]["input"]["oneOf"][0];
                assert_eq!(add_schema["properties"]["tags"]["maxItems"], 8, "{schema}");
                assert_eq!(add_schema["properties"]["tags"]["items"]["maxLength"], 100, "{schema}");
                assert!(add_schema["properties"]["op"].get("maxLength").is_none(), "a constant is not bounded");
                let prompt = &request.messages[1].content;
                assert!(prompt.contains("- calculator: {\"value\":5.0}"), "{prompt}");
                assert!(prompt.contains("Task 2 of 2: save it"), "{prompt}");
                json!({"tool": "notes", "input": {"op": "add", "title": "sum", "body": "5"}})
            }
            _ => {
                // The plan is done: only the final answer is allowed.
                assert_eq!(schema["properties"]["tool"]["const"], "final_answer", "{schema}");
                json!({"tool": "final_answer", "input": {"answer": "5"}})
            }
        };
        Ok(text(&reply.to_string()))
    });
    let host = host_on(&dir.path().join("s.db"), model.clone());
    let config = AgentConfig { max_tokens_per_turn: Some(400), ..config(ToolCalling::Constrained) };
    let agent = Agent::new(&host, config, tools(&host).await).unwrap();
    let goal = Goal::new("Add 2 and 3, keep a note")
        .with_task(Task::using("add 2 and 3", "calculator"))
        .with_task(Task::using("save it", "notes"));
    let mut session = host.new_session().await.unwrap();
    let outcome = agent.start(&mut session, goal, &mut |_| {}).await.unwrap();
    assert_eq!(outcome.answer(), Some("5"));
    assert_eq!(outcome.tool_calls, 2);
}

#[tokio::test]
async fn constrained_run_without_a_plan_offers_every_tool() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new(|n, request| {
        let schema: Value = serde_json::from_str(request.response_schema.as_deref().unwrap()).unwrap();
        let offered: Vec<&str> = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["properties"]["tool"]["const"].as_str().unwrap())
            .collect();
        assert_eq!(offered, ["calculator", "notes", "final_answer"]);
        Ok(text(&match n {
            0 => json!({"tool": "calculator", "input": {"expression": "6 * 7"}}).to_string(),
            _ => json!({"tool": "final_answer", "input": {"answer": "42"}}).to_string(),
        }))
    });
    let host = host_on(&dir.path().join("s.db"), model);
    let agent = Agent::new(&host, config(ToolCalling::Constrained), tools(&host).await).unwrap();
    let mut session = host.new_session().await.unwrap();
    let outcome = agent.start(&mut session, Goal::new("What is 6 * 7?"), &mut |_| {}).await.unwrap();
    assert_eq!(outcome.answer(), Some("42"));
}

#[tokio::test]
async fn turn_limit_stops_cleanly_and_a_resume_with_a_higher_limit_continues() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    // A model that never stops calling the calculator, until turn 5.
    let model = ScriptedModel::new(|n, _| {
        Ok(if n < 4 { calls(&[("calculator", json!({"expression": format!("{n} + 1")}))]) } else { text("done") })
    });
    let host = host_on(&db, model.clone());
    let limited =
        Agent::new(&host, AgentConfig { max_turns: 3, ..config(ToolCalling::Native) }, tools(&host).await).unwrap();
    let mut session = host.new_session().await.unwrap();
    let outcome = limited.start(&mut session, Goal::new("count"), &mut |_| {}).await.unwrap();
    assert_eq!(outcome.stop, Stop::TurnLimit { max_turns: 3 });
    assert_eq!((outcome.turns, outcome.tool_calls), (3, 3));
    let message = outcome.stop.to_string();
    assert!(message.contains("turn limit (3 model turns)") && message.contains("max_turns"), "{message}");
    assert_eq!(model.requests().len(), 3);

    // Resuming with the same limit stops again without asking the model anything.
    let again = limited.resume(&mut session, &mut |_| {}).await.unwrap();
    assert_eq!(again.stop, Stop::TurnLimit { max_turns: 3 });
    assert_eq!(model.requests().len(), 3);

    // A higher limit, in a new host on the same database, continues from turn 4.
    drop(session);
    let host = host_on(&db, model.clone());
    let agent = Agent::new(&host, config(ToolCalling::Native), tools(&host).await).unwrap();
    let mut session = host.open_session(&outcome.session).await.unwrap();
    let (events, mut sink) = recorder();
    let done = agent.resume(&mut session, &mut sink).await.unwrap();
    assert_eq!(done.stop, Stop::Answer("done".into()));
    assert_eq!((done.turns, done.tool_calls), (5, 4));
    assert_eq!(model.requests().len(), 5, "turns 1-3 were not sent again");
    let events = events.lock().unwrap();
    assert!(matches!(events[0], AgentEvent::Resumed { turns: 3, tool_calls: 3, last_step: 7, .. }), "{:?}", events[0]);
    // The resumed request holds the three earlier results, read back from the session.
    assert_eq!(tool_messages(&model.requests()[3].1), [r#"{"value":1.0}"#, r#"{"value":2.0}"#, r#"{"value":3.0}"#]);
}

#[tokio::test]
async fn token_budget_stops_cleanly_and_bounds_max_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // 10 in + 5 out per turn.
    let model = ScriptedModel::new(|_, _| Ok(calls(&[("calculator", json!({"expression": "1 + 1"}))])));
    let host = host_on(&dir.path().join("s.db"), model.clone());
    let config = AgentConfig { token_budget: Some(40), max_tokens_per_turn: Some(100), ..config(ToolCalling::Native) };
    let agent = Agent::new(&host, config, tools(&host).await).unwrap();
    let mut session = host.new_session().await.unwrap();
    let outcome = agent.start(&mut session, Goal::new("spend"), &mut |_| {}).await.unwrap();
    assert_eq!(outcome.stop, Stop::Budget { budget: 40, used: 45 });
    assert_eq!(outcome.turns, 3);
    let message = outcome.stop.to_string();
    assert!(message.contains("token budget is spent (45 of 40 tokens used)"), "{message}");
    let max_tokens: Vec<Option<u32>> = model.requests().iter().map(|(_, r)| r.max_tokens).collect();
    assert_eq!(max_tokens, [Some(40), Some(25), Some(10)], "max-tokens is lowered to what is left");
}

#[tokio::test]
async fn a_failed_model_call_commits_nothing_and_resume_sends_only_that_call() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let failing = ScriptedModel::new(|n, _| match n {
        0 => Ok(calls(&[("calculator", json!({"expression": "2 ^ 10"}))])),
        1 => Ok(calls(&[("notes", json!({"op": "add", "title": "power", "body": "1024"}))])),
        _ => Err(ModelError::ProviderError(ProviderFailure { status: Some(503), message: "overloaded".into() })),
    });
    let host = host_on(&db, failing.clone());
    let agent = Agent::new(&host, config(ToolCalling::Native), tools(&host).await).unwrap();
    let mut session = host.new_session().await.unwrap();
    let id = session.id().to_owned();
    let error = agent.start(&mut session, Goal::new("2^10, noted"), &mut |_| {}).await.unwrap_err();
    assert!(matches!(error, AgentError::Model { turn: 3, .. }), "{error}");
    assert!(error.to_string().contains("HTTP 503"), "{error}");
    assert_eq!(session.last_step(), 5);
    let failed_request = failing.requests()[2].1.clone();
    drop((agent, session, host));

    let working = ScriptedModel::new(|_, _| Ok(text("1024, noted")));
    let host = host_on(&db, working.clone());
    let agent = Agent::new(&host, config(ToolCalling::Native), tools(&host).await).unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    let outcome = agent.resume(&mut session, &mut |_| {}).await.unwrap();
    assert_eq!(outcome.answer(), Some("1024, noted"));
    let requests = working.requests();
    assert_eq!(requests.len(), 1, "only the failed turn is sent again");
    assert_eq!(requests[0].1, failed_request, "the resumed run rebuilds the same request from the session");

    // The notes tool's state survived too: a finished run returns without the model.
    let again = agent.resume(&mut session, &mut |_| {}).await.unwrap();
    assert_eq!(again.answer(), Some("1024, noted"));
    assert_eq!(working.requests().len(), 1);
}

#[tokio::test]
async fn bad_tool_calls_are_committed_and_told_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let model = ScriptedModel::new(|n, _| {
        Ok(match n {
            0 => calls(&[
                ("weather", json!({"city": "Paris"})),
                ("calculator", json!({"expr": "1 + 1"})),
                ("calculator", json!({"expression": "1 / 0"})),
            ]),
            1 => ChatResponse {
                tool_calls: vec![ToolCall { id: "x".into(), name: "notes".into(), arguments: "not json".into() }],
                ..calls(&[])
            },
            _ => text("gave up"),
        })
    });
    let host = host_on(&db, model.clone());
    let agent = Agent::new(&host, config(ToolCalling::Native), tools(&host).await).unwrap();
    let mut session = host.new_session().await.unwrap();
    let outcome = agent.start(&mut session, Goal::new("misbehave"), &mut |_| {}).await.unwrap();
    assert_eq!(outcome.answer(), Some("gave up"));

    let told = tool_messages(&model.requests()[1].1);
    assert_eq!(told.len(), 3);
    assert!(told[0].contains("there is no tool `weather`; the tools are: calculator, notes"), "{}", told[0]);
    assert!(told[1].contains("does not match its schema"), "{}", told[1]);
    assert!(told[2].contains("the tool reported an error: invalid input: division by zero"), "{}", told[2]);
    let told = tool_messages(&model.requests()[2].1);
    assert!(told[3].contains("must be a JSON object"), "{}", told[3]);

    let steps = session.steps(0).await.unwrap();
    let actors: Vec<&str> = steps.iter().map(|s| s.tool.as_str()).collect();
    assert_eq!(
        actors,
        [
            "agent.goal",
            "agent.model",
            "agent.tool-error",
            "agent.tool-error",
            "calculator",
            "agent.model",
            "agent.tool-error",
            "agent.model"
        ]
    );
    assert!(matches!(steps[4].outcome, StepOutcome::Failed(_)));

    // Read back, the run shows the model the same results.
    let model_again = ScriptedModel::new(|_, _| Ok(text("unused")));
    let host = host_on(&db, model_again.clone());
    let agent = Agent::new(&host, config(ToolCalling::Native), tools(&host).await).unwrap();
    let mut session = host.open_session(&outcome.session).await.unwrap();
    assert_eq!(agent.resume(&mut session, &mut |_| {}).await.unwrap().answer(), Some("gave up"));
    assert!(model_again.requests().is_empty());
}

#[tokio::test]
async fn sessions_that_are_not_agent_runs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new(|_, _| Ok(text("x")));
    let host = host_on(&dir.path().join("s.db"), model);
    let tools = tools(&host).await;
    let agent = Agent::new(&host, config(ToolCalling::Native), tools.clone()).unwrap();

    let mut plain = host.new_session().await.unwrap();
    plain.call(&tools[0], &json!({"expression": "1"})).await.unwrap();
    let error = agent.resume(&mut plain, &mut |_| {}).await.unwrap_err();
    assert!(matches!(error, AgentError::NotAnAgentSession { .. }), "{error}");
    assert!(error.to_string().contains("first step is a call to `calculator`"), "{error}");
    let error = agent.start(&mut plain, Goal::new("x"), &mut |_| {}).await.unwrap_err();
    assert!(matches!(error, AgentError::SessionNotEmpty { steps: 1, .. }), "{error}");

    let mut empty = host.new_session().await.unwrap();
    assert!(matches!(agent.resume(&mut empty, &mut |_| {}).await, Err(AgentError::NotAnAgentSession { .. })));

    // A run started in one tool-calling mode does not continue in the other.
    let mut run = host.new_session().await.unwrap();
    agent.start(&mut run, Goal::new("x"), &mut |_| {}).await.unwrap();
    let constrained = Agent::new(&host, config(ToolCalling::Constrained), tools.clone()).unwrap();
    assert!(matches!(constrained.resume(&mut run, &mut |_| {}).await, Err(AgentError::Mismatch { .. })));

    // Configuration errors are typed.
    let bad_task = Goal::new("x").with_task(Task::using("look it up", "search"));
    let error = agent.start(&mut host.new_session().await.unwrap(), bad_task, &mut |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("names the tool `search`"), "{error}");
    let error = Agent::new(&host, AgentConfig::new(""), tools.clone()).unwrap_err();
    assert!(matches!(error, AgentError::InvalidConfig(_)), "{error}");
    let twice = vec![tools[0].clone(), tools[0].clone()];
    assert!(Agent::new(&host, config(ToolCalling::Native), twice).is_err());
    let no_models = crate::support::host(Policy::grant_requested());
    assert!(matches!(Agent::new(&no_models, config(ToolCalling::Native), vec![]), Err(AgentError::NoModelProvider)));
}

/// A reply cut off at `max_tokens` and a planned answer that states a number no tool returned
/// are committed as unusable turns: the run goes on (the model hears why), and a resumed run
/// keeps them and asks the model only for what comes next.
#[tokio::test]
async fn cut_off_and_ungrounded_replies_are_unusable_committed_turns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let first = ScriptedModel::new(|n, _| match n {
        0 => Ok(ChatResponse {
            finish_reason: FinishReason::Length,
            ..text(r#"{"tool": "calculator", "input": {"expression": "2 + 3 + 3 + 3 + 3"#)
        }),
        1 => Ok(text(&json!({"tool": "calculator", "input": {"expression": "2 + 3"}}).to_string())),
        2 => Ok(text(&json!({"tool": "final_answer", "input": {"answer": "The sum is 6."}}).to_string())),
        _ => Err(ModelError::ProviderError(ProviderFailure { status: Some(503), message: "overloaded".into() })),
    });
    let host = host_on(&db, first.clone());
    let agent = Agent::new(&host, config(ToolCalling::Constrained), tools(&host).await).unwrap();
    let mut session = host.new_session().await.unwrap();
    let id = session.id().to_owned();
    let (events, mut sink) = recorder();
    let goal = Goal::new("Add 2 and 3.").with_task(Task::using("Add them with the calculator.", "calculator"));
    let error = agent.start(&mut session, goal, &mut sink).await.unwrap_err();
    assert!(matches!(error, AgentError::Model { turn: 4, .. }), "{error}");
    let decisions: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ModelTurn { decision, .. } => Some(decision.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert!(decisions[0].contains("unusable reply: the reply was cut off at the turn's token limit"), "{decisions:?}");
    assert_eq!(decisions[1], "call calculator");
    assert!(decisions[2].contains("the answer states 6, which no tool result shows"), "{decisions:?}");
    // The cut-off turn was asked again on the same task, not counted as the task done.
    assert_eq!(first.requests()[1].1.response_schema, first.requests()[0].1.response_schema);
    assert_eq!(session.last_step(), 5, "goal, three model turns, one calculator call");
    drop((agent, session, host));

    let working = ScriptedModel::new(|_, _| {
        Ok(text(&json!({"tool": "final_answer", "input": {"answer": "The sum is 5."}}).to_string()))
    });
    let host = host_on(&db, working.clone());
    let agent = Agent::new(&host, config(ToolCalling::Constrained), tools(&host).await).unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    let outcome = agent.resume(&mut session, &mut |_| {}).await.unwrap();
    assert_eq!(outcome.answer(), Some("The sum is 5."));
    assert_eq!(outcome.turns, 4, "the unusable turns are kept, not asked again");
    let requests = working.requests();
    assert_eq!(requests.len(), 1);
    let prompt = &requests[0].1.messages[1].content;
    assert!(prompt.contains("rejected: the reply was cut off"), "{prompt}");
    assert!(prompt.contains("rejected: the answer states 6"), "{prompt}");
    assert!(prompt.contains("- calculator: {\"value\":5.0}"), "{prompt}");
}
