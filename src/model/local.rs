//! The offline local model served by llama.cpp (the `xllamacpp` wheel) as a child process on a
//! free 127.0.0.1 port: for development, tests and examples. Two models: Qwen2.5-Coder-1.5B
//! (the default, good enough for the agent examples) and SmolLM2-135M (fast, for plumbing).
//!
//! The server runs `scripts/serve_local_model.py` with the project's `.venv/bin/python`.
//! [`LocalModel::start`] first runs `scripts/setup` (idempotent, once per process, under a
//! file lock shared with other processes), so a fresh clone installs what it needs on first
//! use. The server exits when its stdin closes, so dropping the handle stops it cleanly, and
//! it never outlives this process even if this process is killed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::{ModelsConfig, ProviderConfig, ProviderKind, RetryPolicy, ToolMode};

/// Which local model to serve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LocalModelChoice {
    /// Qwen2.5-Coder-1.5B-Instruct Q4_K_M: 1.1 GB, ~2 GB RSS, 19-23 tokens/s on 2 quiet cores.
    /// Fills tool inputs and follows a plan; the examples' model.
    #[default]
    Qwen15b,
    /// SmolLM2-135M-Instruct Q4_1: 93 MB, ~300 MB RSS, fast; enough to test plumbing, not to
    /// reason.
    Small,
}

impl LocalModelChoice {
    /// The name `--model` takes (and `serve_local_model.py --model`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Qwen15b => "qwen1.5b",
            Self::Small => "small",
        }
    }

    /// The model id the server answers to.
    pub fn model_id(self) -> &'static str {
        match self {
            Self::Qwen15b => "qwen2.5-coder-1.5b",
            Self::Small => "smollm2-135m",
        }
    }
}

impl std::fmt::Display for LocalModelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LocalModelChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "qwen1.5b" => Ok(Self::Qwen15b),
            "small" => Ok(Self::Small),
            other => Err(format!("no local model `{other}`: choose qwen1.5b (the default) or small")),
        }
    }
}

/// Where the interpreter and script are, and how to serve.
#[derive(Debug, Clone)]
pub struct LocalModelOptions {
    pub python: PathBuf,
    pub script: PathBuf,
    /// Run before starting, to install what is missing (`None`: install nothing).
    pub setup: Option<PathBuf>,
    pub choice: LocalModelChoice,
    /// `None`: a free port.
    pub port: Option<u16>,
    /// Threads per phase; 1 holds up best on 2-core machines under load.
    pub threads: u32,
    pub context_tokens: u32,
    /// The model id the server answers to.
    pub model: String,
    /// How long to wait for `/health`.
    pub startup_timeout: Duration,
}

impl LocalModelOptions {
    /// The default model, with the venv, scripts and set-up of the project checked out at `root`.
    pub fn for_project(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        let choice = LocalModelChoice::default();
        Self {
            python: root.join(".venv/bin/python"),
            script: root.join("scripts/serve_local_model.py"),
            setup: Some(root.join("scripts/setup")),
            choice,
            port: None,
            threads: 1,
            context_tokens: 4096,
            model: choice.model_id().into(),
            startup_timeout: Duration::from_secs(120),
        }
    }

    /// These options with `choice` served under its own model id.
    pub fn with_model(self, choice: LocalModelChoice) -> Self {
        Self { choice, model: choice.model_id().into(), ..self }
    }
}

/// Runs the project's `setup` script unless this process already ran it, holding an exclusive
/// lock on `<project>/.venv.lock` meanwhile, so parallel tests and concurrent processes (two
/// test binaries, an example beside `cargo test`) install once and never see a half-made venv.
/// The script is idempotent and returns at once when everything is in place.
pub fn ensure_installed(setup: &Path) -> Result<(), LocalModelError> {
    static DONE: Mutex<BTreeMap<PathBuf, Result<(), String>>> = Mutex::new(BTreeMap::new());
    let mut done = DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let failed = |reason: String| LocalModelError::Setup { script: setup.to_owned(), reason };
    if let Some(result) = done.get(setup) {
        return result.clone().map_err(failed);
    }
    let result = run_setup(setup);
    done.insert(setup.to_owned(), result.clone());
    result.map_err(failed)
}

fn run_setup(setup: &Path) -> Result<(), String> {
    let project = setup.parent().and_then(Path::parent).ok_or("the script is not in <project>/scripts/")?;
    let lock_path = project.join(".venv.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    // Its progress goes to our stderr: stdout may be a result someone parses.
    let status = Command::new(setup)
        .current_dir(project)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("cannot run it: {e}"))?;
    drop(lock);
    if status.success() { Ok(()) } else { Err(format!("it failed ({status}); its output above says why")) }
}

/// Why the local model did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalModelError {
    #[error("{path} is missing; run scripts/setup to create the Python venv with the local model")]
    NotInstalled { path: PathBuf },
    #[error("installing the local model with {script}: {reason}")]
    Setup { script: PathBuf, reason: String },
    #[error("cannot find a free port on 127.0.0.1")]
    Port(#[source] std::io::Error),
    #[error("cannot start {python}")]
    Spawn { python: PathBuf, source: std::io::Error },
    #[error("the local model server exited during start-up ({status}); its log ends with:\n{log}")]
    Exited { status: String, log: String },
    #[error("the local model server did not answer /health within {0:?}")]
    NotReady(Duration),
}

/// A running local model server. Dropping it stops the server.
#[derive(Debug)]
pub struct LocalModel {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    model: String,
    log: tempfile::NamedTempFile,
}

impl LocalModel {
    /// Starts the server and waits until it answers `/health`.
    pub async fn start(options: LocalModelOptions) -> Result<Self, LocalModelError> {
        if let Some(setup) = options.setup.clone() {
            tokio::task::spawn_blocking(move || ensure_installed(&setup)).await.map_err(|e| {
                LocalModelError::Setup { script: PathBuf::from("scripts/setup"), reason: e.to_string() }
            })??;
        }
        for path in [&options.python, &options.script] {
            if !path.exists() {
                return Err(LocalModelError::NotInstalled { path: path.clone() });
            }
        }
        let port = match options.port {
            Some(port) => port,
            None => {
                let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(LocalModelError::Port)?;
                probe.local_addr().map_err(LocalModelError::Port)?.port()
            }
        };
        let log = tempfile::NamedTempFile::new().map_err(LocalModelError::Port)?;
        let spawn_error = |source| LocalModelError::Spawn { python: options.python.clone(), source };
        let mut child = Command::new(&options.python)
            .arg(&options.script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", &options.threads.to_string(), "--ctx", &options.context_tokens.to_string()])
            .args(["--model", options.choice.name(), "--alias", &options.model])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log.reopen().map_err(spawn_error)?)
            .spawn()
            .map_err(spawn_error)?;
        let stdin = child.stdin.take();
        let mut server = Self { child, stdin, port, model: options.model.clone(), log };
        server.wait_ready(options.startup_timeout).await?;
        tracing::info!(port, model = %server.model, "local model ready");
        Ok(server)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), LocalModelError> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
        let url = format!("{}/health", self.base_url());
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LocalModelError::Exited { status: status.to_string(), log: self.log_tail() });
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(LocalModelError::NotReady(timeout));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = self.log.reopen() {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The model id to send.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// A provider for this server's OpenAI-compatible endpoint. The model cannot emit
    /// native tool calls, so tools go through the JSON-Schema tool mode; it answers slowly
    /// on small machines, so the deadline is generous.
    pub fn openai_provider(&self) -> ProviderConfig {
        ProviderConfig {
            timeout_secs: 300,
            tool_mode: ToolMode::JsonSchema,
            retry: RetryPolicy::none(),
            ..ProviderConfig::new(ProviderKind::Openai, format!("{}/v1", self.base_url()))
        }
    }

    /// A provider for this server's Anthropic endpoint. It passes no response format on,
    /// so schemas go through a forced tool, which the model emits with the Hermes prefill.
    pub fn anthropic_provider(&self) -> ProviderConfig {
        ProviderConfig {
            timeout_secs: 300,
            tool_mode: ToolMode::JsonSchema,
            retry: RetryPolicy::none(),
            prefill_tool_calls: true,
            ..ProviderConfig::new(ProviderKind::Anthropic, format!("{}/v1", self.base_url()))
        }
    }

    /// Providers `local-openai` and `local-anthropic` with aliases `local` and
    /// `local-anthropic` for this server.
    pub fn models_config(&self) -> ModelsConfig {
        ModelsConfig::default()
            .with_provider("local-openai", self.openai_provider())
            .with_provider("local-anthropic", self.anthropic_provider())
            .with_alias("local", "local-openai", &self.model)
            .with_alias("local-anthropic", "local-anthropic", &self.model)
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // EOF on its stdin makes the server stop; kill it if it does not within 5 s.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        tracing::warn!(port = self.port, "the local model did not stop within 5 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalModel {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.shutdown();
        }
    }
}
