//! Builds TypeScript/JavaScript tools (a directory whose `package.json` has a `toolhost` field
//! naming the tool's main module) into components: esbuild bundles the tool with the SDK
//! (`sdk/js/src`), componentize-js embeds the bundle in SpiderMonkey. The SDK, the WIT contract
//! and the toolchain's lockfile are embedded in the host, so `toolhost build` works outside this
//! repository; the toolchain is installed with `npm ci` (exact versions, integrity hashes) into a
//! directory of its own on first use.
//!
//! Builds are content-addressed like Python's (`python_build`): an unchanged tool is not rebuilt.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::build_inputs::{self, Sources};
use crate::source::Source;

/// The toolchain's manifest and lockfile (`sdk/js/toolchain`), installed with `npm ci`.
pub const TOOLCHAIN_PACKAGE: &str = include_str!("../sdk/js/toolchain/package.json");
pub const TOOLCHAIN_LOCK: &str = include_str!("../sdk/js/toolchain/package-lock.json");
/// The build driver, run by Node from the installed toolchain.
const BUILD_SCRIPT: &str = include_str!("../sdk/js/toolchain/build.mjs");
/// The SDK, file by file (a test checks the list against `sdk/js/src`).
pub const SDK_FILES: &[(&str, &str)] = &[
    ("errors.ts", include_str!("../sdk/js/src/errors.ts")),
    ("export.ts", include_str!("../sdk/js/src/export.ts")),
    ("globals.d.ts", include_str!("../sdk/js/src/globals.d.ts")),
    ("http.ts", include_str!("../sdk/js/src/http.ts")),
    ("index.ts", include_str!("../sdk/js/src/index.ts")),
    ("log.ts", include_str!("../sdk/js/src/log.ts")),
    ("model.ts", include_str!("../sdk/js/src/model.ts")),
    ("schema.ts", include_str!("../sdk/js/src/schema.ts")),
    ("state.ts", include_str!("../sdk/js/src/state.ts")),
    ("testing.ts", include_str!("../sdk/js/src/testing.ts")),
    ("tool.ts", include_str!("../sdk/js/src/tool.ts")),
    ("wit.d.ts", include_str!("../sdk/js/src/wit.d.ts")),
];
const STAMP: &str = ".toolhost-js";
/// The sources of a tool that go into its hash (its own `node_modules` is covered by its lockfile).
const SOURCE_EXTENSIONS: &[&str] = &["ts", "mts", "cts", "tsx", "js", "mjs", "cjs", "jsx", "json"];

#[derive(Debug, thiserror::Error)]
pub enum JsBuildError {
    /// `reason` says what is wrong with the project file; `source`, if any, why (the read's
    /// or the JSON parser's error).
    #[error("{path}: {reason}")]
    Project { path: PathBuf, reason: String, source: Option<Source> },
    #[error("cannot run `{program}` (Node.js 20 or later, with npm, builds TypeScript/JavaScript tools)")]
    Spawn { program: String, source: std::io::Error },
    #[error(
        "installing the JavaScript tool toolchain into {dir} failed; is the npm registry reachable from \
         here (npm's registry, proxy and certificate settings)?\n{stderr}"
    )]
    Install { dir: PathBuf, stderr: String },
    #[error("{step} failed ({status}):\n{stderr}")]
    Tool { step: String, status: String, stderr: String },
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JsBuildError + '_ {
    move |source| JsBuildError::Io { path: path.to_owned(), source }
}

/// A TypeScript/JavaScript tool's project, as its `package.json` declares it.
#[derive(Debug, Clone)]
pub struct JsProject {
    pub dir: PathBuf,
    /// The module whose default export is the tool (`"toolhost": { "main": ... }`), relative to `dir`.
    pub main: PathBuf,
}

/// Whether `dir` holds a JS/TS tool (a `package.json` with a `toolhost` field).
pub fn is_js_tool(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join("package.json")) else { return false };
    serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|doc| doc.get("toolhost").is_some())
}

impl JsProject {
    pub fn open(dir: &Path) -> Result<Self, JsBuildError> {
        let path = dir.join("package.json");
        let project = |reason: String| JsBuildError::Project { path: path.clone(), reason, source: None };
        let unreadable = |reason: &str, source: Source| JsBuildError::Project {
            path: path.clone(),
            reason: reason.into(),
            source: Some(source),
        };
        let text = fs::read_to_string(&path).map_err(|e| unreadable("cannot be read", Source::new(e)))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| unreadable("is not JSON", Source::new(e)))?;
        let table = doc
            .get("toolhost")
            .ok_or_else(|| project("no `toolhost` field (it names the tool's main module)".into()))?;
        let main = table
            .get("main")
            .and_then(|m| m.as_str())
            .map(PathBuf::from)
            .filter(|m| is_inside(m) && has_source_extension(m))
            .ok_or_else(|| project("`toolhost` needs `\"main\": \"<relative path to a .ts or .js module>\"`".into()))?;
        if !dir.join(&main).is_file() {
            return Err(project(format!("the main module {} does not exist", main.display())));
        }
        Ok(Self { dir: dir.to_owned(), main })
    }

    /// A file name for the build: the main module's stem.
    fn stem(&self) -> String {
        let stem = self.main.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
    }
}

/// A relative path that stays inside its directory.
fn is_inside(path: &Path) -> bool {
    use std::path::Component;
    path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn has_source_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| SOURCE_EXTENSIONS.contains(&e) && e != "json")
}

/// Where `toolhost build` installs the toolchain by default: one per user (it is ~400 MB), in
/// the user cache folder, else beside the tool in `.toolhost-js`.
pub fn default_toolchain_dir(tool_dir: &Path) -> PathBuf {
    dirs::cache_dir().map(|d| d.join("toolhost/js-toolchain")).unwrap_or_else(|| tool_dir.join(".toolhost-js"))
}

/// Serializes installs and builds within a process; a lock file covers other processes.
static LOCK: Mutex<()> = Mutex::new(());

fn run(mut command: Command, step: &str) -> Result<Output, JsBuildError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command.stdin(Stdio::null()).output().map_err(|source| JsBuildError::Spawn { program, source })?;
    if !out.status.success() {
        return Err(JsBuildError::Tool {
            step: step.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
        });
    }
    Ok(out)
}

/// The sha256 of the toolchain's pins, as `scripts/setup` computes it (`cat package.json
/// package-lock.json | sha256sum`).
pub fn toolchain_stamp() -> String {
    let mut hasher = Sha256::new();
    hasher.update(TOOLCHAIN_PACKAGE.as_bytes());
    hasher.update(TOOLCHAIN_LOCK.as_bytes());
    hex::encode(hasher.finalize())
}

fn program(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.into())
}

/// Installs the pinned toolchain into `dir` (`npm ci`, no install scripts) unless it is there
/// already, and writes the build driver beside it. Idempotent; quick when installed. Returns
/// the driver's path.
pub fn ensure_toolchain(dir: &Path) -> Result<PathBuf, JsBuildError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let stamp = dir.join(STAMP);
    let installed = dir.join("node_modules/@bytecodealliance/componentize-js/package.json");
    if !(fs::read_to_string(&stamp).is_ok_and(|s| s == toolchain_stamp()) && installed.is_file()) {
        eprintln!(
            "toolhost: installing the JavaScript tool toolchain into {} (~160 npm packages, ~400 MB)",
            dir.display()
        );
        for (name, text) in [("package.json", TOOLCHAIN_PACKAGE), ("package-lock.json", TOOLCHAIN_LOCK)] {
            fs::write(dir.join(name), text).map_err(io(&dir.join(name)))?;
        }
        let mut npm = Command::new(program("NPM", "npm"));
        npm.current_dir(dir).args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]);
        run(npm, "npm ci").map_err(|e| match e {
            JsBuildError::Tool { stderr, .. } => JsBuildError::Install { dir: dir.to_owned(), stderr },
            other => other,
        })?;
        fs::write(&stamp, toolchain_stamp()).map_err(io(&stamp))?;
    }
    let script = dir.join("build.mjs");
    if fs::read_to_string(&script).ok().as_deref() != Some(BUILD_SCRIPT) {
        fs::write(&script, BUILD_SCRIPT).map_err(io(&script))?;
    }
    Ok(script)
}

/// Builds the JS/TS tool in `dir` into `out_dir`, installing the toolchain into `toolchain` if
/// needed, and returns the component's path. Returns the earlier output if nothing changed.
pub fn build(dir: &Path, toolchain: &Path, out_dir: &Path) -> Result<PathBuf, JsBuildError> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let project = JsProject::open(dir)?;
    fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let lock_path = out_dir.join(".js-build.lock");
    let lock = fs::File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let toolchain_lock = toolchain.join(".install.lock");
    fs::create_dir_all(toolchain).map_err(io(toolchain))?;
    let install = fs::File::create(&toolchain_lock).map_err(io(&toolchain_lock))?;
    install.lock().map_err(io(&toolchain_lock))?;
    let script = ensure_toolchain(toolchain)?;
    let out = out_dir.join(format!("{}-{}.wasm", project.stem(), &inputs_hash(&project)?[..16]));
    if out.exists() {
        return Ok(out);
    }
    let stage = tempfile::tempdir_in(out_dir).map_err(io(out_dir))?;
    let (sdk, wit) = write_sdk(stage.path())?;
    let main = fs::canonicalize(project.dir.join(&project.main)).map_err(io(&project.main))?;
    let partial = stage.path().join("tool.wasm");
    let mut node = Command::new(program("NODE", "node"));
    node.arg(&script)
        .arg("--sdk")
        .arg(&sdk)
        .arg("--wit")
        .arg(&wit)
        .arg("--main")
        .arg(&main)
        .arg("--stage")
        .arg(stage.path())
        .arg("--out")
        .arg(&partial);
    run(node, &format!("building the JavaScript tool {}", project.dir.display()))?;
    fs::rename(&partial, &out).map_err(io(&out))?;
    Ok(out)
}

/// Runs the tool's unit tests (`*.test.ts` / `*.test.js` under `dir`, outside `node_modules`)
/// with Node's test runner on the SDK's test host; their output goes to this process's stdout
/// and stderr.
pub fn test(dir: &Path, toolchain: &Path) -> Result<(), JsBuildError> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    JsProject::open(dir)?;
    let sources = build_inputs::files(dir, &SOURCES).map_err(|(path, source)| JsBuildError::Io { path, source })?;
    let tests: Vec<PathBuf> = sources
        .into_iter()
        .filter(|(relative, _)| {
            [".test.ts", ".test.js", ".test.mts", ".test.mjs"].iter().any(|e| relative.ends_with(e))
        })
        .map(|(_, path)| path)
        .collect();
    if tests.is_empty() {
        return Err(JsBuildError::Project {
            path: dir.to_owned(),
            reason: "no *.test.ts or *.test.js files".into(),
            source: None,
        });
    }
    fs::create_dir_all(toolchain).map_err(io(toolchain))?;
    let script = ensure_toolchain(toolchain)?;
    let stage = tempfile::tempdir().map_err(io(dir))?;
    let (sdk, _) = write_sdk(stage.path())?;
    let mut node = Command::new(program("NODE", "node"));
    node.arg(&script).arg("--test").arg("--sdk").arg(&sdk).arg("--stage").arg(stage.path()).args(&tests);
    let program = node.get_program().to_string_lossy().into_owned();
    let status = node.stdin(Stdio::null()).status().map_err(|source| JsBuildError::Spawn { program, source })?;
    if !status.success() {
        return Err(JsBuildError::Tool {
            step: format!("the tests of {}", dir.display()),
            status: status.to_string(),
            stderr: "(see the test runner's output above)".into(),
        });
    }
    Ok(())
}

fn write_sdk(stage: &Path) -> Result<(PathBuf, PathBuf), JsBuildError> {
    let sdk = stage.join("sdk");
    let wit = stage.join("wit");
    fs::create_dir_all(&sdk).map_err(io(&sdk))?;
    fs::create_dir_all(&wit).map_err(io(&wit))?;
    for (name, text) in SDK_FILES {
        fs::write(sdk.join(name), text).map_err(io(&sdk.join(name)))?;
    }
    build_inputs::write_sdk_wit(&wit).map_err(|(path, source)| JsBuildError::Io { path, source })?;
    Ok((sdk, wit))
}

/// A hash of the toolchain pins, the build driver, the SDK, the WIT and the tool's own sources.
fn inputs_hash(project: &JsProject) -> Result<String, JsBuildError> {
    let main = project.main.to_string_lossy();
    let sdk = [SDK_FILES, build_inputs::SDK_WIT].concat();
    build_inputs::hash(&[TOOLCHAIN_LOCK, BUILD_SCRIPT, &main], &sdk, &project.dir, &SOURCES)
        .map_err(|(path, source)| JsBuildError::Io { path, source })
}

/// A tool's sources: what the build reads, and where its tests are found.
const SOURCES: Sources = Sources { skip_dirs: &["node_modules", "target", "dist"], is_source: is_source_file };

fn is_source_file(name: &str) -> bool {
    Path::new(name).extension().and_then(|e| e.to_str()).is_some_and(|e| SOURCE_EXTENSIONS.contains(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_sdk_lists_every_module() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/js/src");
        let mut on_disk: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".ts"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = SDK_FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(embedded, on_disk, "update SDK_FILES in src/js_build.rs");
    }

    #[test]
    fn project_needs_a_toolhost_field_with_a_main_module_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let package = dir.path().join("package.json");
        assert!(!is_js_tool(dir.path()));
        fs::write(&package, r#"{"name": "x"}"#).unwrap();
        assert!(!is_js_tool(dir.path()));
        let err = JsProject::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`toolhost`"), "{err}");
        for bad in [
            r#"{"toolhost": {}}"#,
            r#"{"toolhost": {"main": "../escape.ts"}}"#,
            r#"{"toolhost": {"main": "/etc/x.ts"}}"#,
        ] {
            fs::write(&package, bad).unwrap();
            assert!(is_js_tool(dir.path()));
            assert!(JsProject::open(dir.path()).is_err(), "{bad}");
        }
        fs::write(&package, r#"{"toolhost": {"main": "src/tool.ts"}}"#).unwrap();
        let err = JsProject::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        fs::create_dir(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/tool.ts"), "export default 1;").unwrap();
        let project = JsProject::open(dir.path()).unwrap();
        assert_eq!((project.stem(), project.main), ("tool".to_owned(), PathBuf::from("src/tool.ts")));
    }

    #[test]
    fn a_source_change_changes_the_build_hash_and_dependencies_do_not() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("package.json"), r#"{"toolhost": {"main": "tool.ts"}}"#).unwrap();
        fs::write(dir.path().join("tool.ts"), "export default 1;").unwrap();
        let project = JsProject::open(dir.path()).unwrap();
        let before = inputs_hash(&project).unwrap();
        fs::create_dir_all(dir.path().join("node_modules/x")).unwrap();
        fs::write(dir.path().join("node_modules/x/index.js"), "1").unwrap();
        assert_eq!(inputs_hash(&project).unwrap(), before);
        fs::write(dir.path().join("tool.ts"), "export default 2;").unwrap();
        assert_ne!(inputs_hash(&project).unwrap(), before);
    }
}
