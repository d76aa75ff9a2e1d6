//! Shared set-up: the tool components (built once per process) and host constructors.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use toolhost::model::{LocalModelChoice, LocalModelOptions};
use toolhost::{EngineConfig, Host, HostConfig, Limits, LocalModel, Policy, ToolGrants};

pub struct Guests {
    pub calculator: PathBuf,
    pub notes: PathBuf,
    pub hostile: PathBuf,
    pub wrong_world: PathBuf,
    pub ballast: PathBuf,
}

/// Builds the example and fixture tools once per test process.
pub fn guests() -> &'static Guests {
    static GUESTS: OnceLock<Guests> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
        let paths =
            toolhost::guest_build::build(workspace, &["calculator", "notes", "hostile", "wrong-world", "ballast"])
                .unwrap_or_else(|e| panic!("building the test tools: {e}"));
        let [calculator, notes, hostile, wrong_world, ballast] = <[PathBuf; 5]>::try_from(paths).unwrap();
        Guests { calculator, notes, hostile, wrong_world, ballast }
    })
}

/// A compile cache shared by the tests of this process, so each component compiles once.
fn shared_cache_dir() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path().to_owned()
}

/// The key that authenticates the shared cache, outside it (and outside the user's own).
fn shared_cache_key() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path().join("cache.key")
}

pub fn engine_config() -> EngineConfig {
    EngineConfig {
        cache_dir: Some(shared_cache_dir()),
        cache_key: Some(shared_cache_key()),
        max_instances: 64,
        ..EngineConfig::default()
    }
}

pub fn host(policy: Policy) -> Host {
    Host::new(HostConfig { engine: engine_config(), policy, ..HostConfig::default() }).expect("host")
}

/// A host whose sessions live in `store`.
pub fn host_on(store: std::sync::Arc<dyn toolhost::Store>, policy: Policy) -> Host {
    Host::with_store(HostConfig { engine: engine_config(), policy, ..HostConfig::default() }, store).expect("host")
}

/// Limits small enough that hostile calls fail fast.
pub fn tight_limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        cpu_time: Duration::from_millis(300),
        max_output_bytes: 64 << 10,
        ..Limits::default()
    }
}

/// Grants `namespaces` read-write with `limits`.
pub fn grants(namespaces: &[&str], limits: Limits) -> ToolGrants {
    let mut grants = ToolGrants { limits, ..ToolGrants::default() };
    for ns in namespaces {
        grants.state.namespaces.insert(ns.to_string(), toolhost::Access::ReadWrite);
    }
    grants
}

/// The example `name`, built (debug) if needed; its path.
pub fn example_binary(name: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "--example", name])
        .env_remove("RUSTFLAGS")
        .output()
        .expect("running cargo");
    assert!(out.status.success(), "building the example {name}: {}", String::from_utf8_lossy(&out.stderr));
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
    target.join("debug/examples").join(name)
}

/// A session that calls the hostile tool's harmless `echo` until `done`, counting its calls
/// in `served`: run beside an attack, it shows that other sessions keep being served.
pub async fn bystander(
    host: &Host,
    hostile: &toolhost::Tool,
    done: &std::sync::atomic::AtomicBool,
    served: &std::sync::atomic::AtomicU64,
) {
    use std::sync::atomic::Ordering;
    let mut session = host.new_session().await.unwrap();
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) {
        n += 1;
        let out = session.call(hostile, &serde_json::json!({"attack": "echo", "n": n})).await.unwrap();
        assert_eq!(out["echo"], n);
        served.fetch_add(1, Ordering::Relaxed);
        tokio::task::yield_now().await;
    }
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project venv's Python, after running the set-up the examples run (`scripts/setup`:
/// once per process, under a lock shared with other processes; it says what it downloads).
pub fn venv_python() -> PathBuf {
    let setup = workspace().join("scripts/setup");
    toolhost::model::ensure_installed(&setup).unwrap_or_else(|e| panic!("{e}"));
    workspace().join(".venv/bin/python")
}

/// A local model server shared by the tests of this process; it stops when the process exits
/// (its stdin closes). Started on its own thread and runtime: it outlives any one test's
/// runtime, and this runs inside one.
pub fn local_model(choice: LocalModelChoice) -> &'static LocalModel {
    static QWEN: OnceLock<LocalModel> = OnceLock::new();
    static SMALL: OnceLock<LocalModel> = OnceLock::new();
    let cell = match choice {
        LocalModelChoice::Qwen15b => &QWEN,
        LocalModelChoice::Small => &SMALL,
    };
    cell.get_or_init(|| {
        let options = LocalModelOptions::for_project(workspace()).with_model(choice);
        let started = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(LocalModel::start(options))
        });
        started.join().expect("the start-up thread").unwrap_or_else(|e| panic!("the local model `{choice}`: {e}"))
    })
}

/// Sends `child`'s stderr (spawned with `Stdio::piped()`) through the test's captured output,
/// shown only when the test fails, instead of onto the terminal between the test results.
/// The thread that copies it inherits the test's capture.
pub fn capture_stderr(child: &mut std::process::Child) {
    use std::io::BufRead;
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
    }
}

pub struct PythonTools {
    pub table: PathBuf,
    pub hostile: PathBuf,
}

/// Where Python tools and their compiled artifacts are kept between test runs: componentize-py
/// takes ~10 s per tool and compiling its ~18 MB component as long again, so both are cached
/// (builds by a hash of their inputs, compiles in a compile cache of their own).
fn python_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    target.join("python-tools")
}

/// The Python example and fixture tools, built once per process (and only when they changed),
/// with the toolchain installed into `.venv-sdk` on first use.
pub fn python_tools() -> &'static PythonTools {
    static TOOLS: OnceLock<PythonTools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let venv = workspace().join(".venv-sdk");
        let build = |dir: &str| {
            toolhost::python_build::build(&workspace().join(dir), &venv, &python_dir())
                .unwrap_or_else(|e| panic!("building the Python tool {dir}: {e}"))
        };
        let tools =
            PythonTools { table: build("examples/tools/table-py"), hostile: build("tests/fixtures/hostile-py") };
        warm_compile_cache(python_engine_config(), &[&tools.table, &tools.hostile]);
        tools
    })
}

/// Compiles `components` into `engine`'s compile cache once, so tests running in parallel
/// read it instead of each compiling the same 12-18 MB. On its own thread and runtime: callers
/// are inside a test's runtime.
fn warm_compile_cache(engine: EngineConfig, components: &[&Path]) {
    let components: Vec<PathBuf> = components.iter().map(|p| p.to_path_buf()).collect();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let host = Host::new(HostConfig {
            engine,
            policy: Policy::deny_all().on_ungranted(toolhost::OnUngranted::DenyAtUse),
            ..HostConfig::default()
        })
        .expect("host");
        for component in &components {
            runtime.block_on(host.load_tool(component)).unwrap_or_else(|e| panic!("{}: {e}", component.display()));
        }
    })
    .join()
    .expect("compiling the tools");
}

/// An engine whose compile cache outlives the test run, for the large Python components.
pub fn python_engine_config() -> EngineConfig {
    cached_engine_config(python_dir())
}

fn cached_engine_config(dir: PathBuf) -> EngineConfig {
    std::fs::create_dir_all(&dir).expect("tools dir");
    EngineConfig {
        cache_dir: Some(dir.join("compiled")),
        cache_key: Some(dir.join("compile-cache.key")),
        max_instances: 64,
        ..EngineConfig::default()
    }
}

pub struct JsTools {
    pub calendar: PathBuf,
    pub hostile: PathBuf,
}

/// Where TypeScript tools and their compiled artifacts are kept between test runs (~12 MB
/// components: componentize-js takes ~20 s per tool and compiling one about as long).
fn js_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    target.join("js-tools")
}

/// The TypeScript example and fixture tools, built once per process (and only when they
/// changed), with the toolchain installed into `.node-sdk` on first use (`scripts/setup`).
pub fn js_tools() -> &'static JsTools {
    static TOOLS: OnceLock<JsTools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let toolchain = workspace().join(".node-sdk");
        let build = |dir: &str| {
            toolhost::js_build::build(&workspace().join(dir), &toolchain, &js_dir())
                .unwrap_or_else(|e| panic!("building the TypeScript tool {dir}: {e}"))
        };
        let tools =
            JsTools { calendar: build("examples/tools/calendar-ts"), hostile: build("tests/fixtures/hostile-js") };
        warm_compile_cache(js_engine_config(), &[&tools.calendar, &tools.hostile]);
        tools
    })
}

/// An engine whose compile cache outlives the test run, for the TypeScript components.
pub fn js_engine_config() -> EngineConfig {
    cached_engine_config(js_dir())
}

/// Runs the test `name` (its full path) alone in a child process of this test binary, with
/// `env` set so it knows it is the child; returns what it printed. For tests that measure the
/// whole process (RSS, open descriptors).
pub fn run_in_child(name: &str, env: &str) -> String {
    guests(); // build the tools here, not in the child's measured run
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    println!("{text}");
    assert!(output.status.success(), "{name} failed in its child process:\n{text}");
    text
}
