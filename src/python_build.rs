//! Builds Python tools (a directory with a `pyproject.toml` holding `[tool.toolhost]`) into
//! components with componentize-py. The SDK (`sdk/python/toolhost_tool`) and the WIT contract
//! are embedded in the host, so `toolhost build` works outside this repository; the toolchain
//! is installed into a venv on first use, pinned by hash (`scripts/requirements-sdk.txt`).
//!
//! Builds are content-addressed: the output name carries a hash of everything that goes into
//! the component, so an unchanged tool is not rebuilt (componentize-py takes ~10 s or more).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::build_inputs::{self, Sources};
use crate::source::Source;

/// The pinned toolchain, installed with `pip --require-hashes`.
pub const REQUIREMENTS: &str = include_str!("../scripts/requirements-sdk.txt");
/// The SDK package, file by file (a test checks the list against `sdk/python/toolhost_tool`).
pub const SDK_FILES: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../sdk/python/toolhost_tool/__init__.py")),
    ("_export.py", include_str!("../sdk/python/toolhost_tool/_export.py")),
    ("capabilities.py", include_str!("../sdk/python/toolhost_tool/capabilities.py")),
    ("errors.py", include_str!("../sdk/python/toolhost_tool/errors.py")),
    ("http.py", include_str!("../sdk/python/toolhost_tool/http.py")),
    ("log.py", include_str!("../sdk/python/toolhost_tool/log.py")),
    ("model.py", include_str!("../sdk/python/toolhost_tool/model.py")),
    ("schema.py", include_str!("../sdk/python/toolhost_tool/schema.py")),
    ("state.py", include_str!("../sdk/python/toolhost_tool/state.py")),
    ("tooldef.py", include_str!("../sdk/python/toolhost_tool/tooldef.py")),
];
/// The generated entry module componentize-py wraps.
const ENTRY: &str = "toolhost_entry";
const STAMP: &str = ".toolhost-sdk";

#[derive(Debug, thiserror::Error)]
pub enum PythonBuildError {
    /// `reason` says what is wrong with the project file; `source`, if any, why (the read's
    /// or the TOML parser's error).
    #[error("{path}: {reason}")]
    Project { path: PathBuf, reason: String, source: Option<Source> },
    #[error("cannot run `{program}`")]
    Spawn { program: String, source: std::io::Error },
    #[error(
        "installing componentize-py into {venv} failed; is PyPI reachable from here (pip's index, proxy \
         and certificate settings)?\n{stderr}"
    )]
    Install { venv: PathBuf, stderr: String },
    #[error("{step} failed ({status}):\n{stderr}")]
    Tool { step: String, status: String, stderr: String },
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PythonBuildError + '_ {
    move |source| PythonBuildError::Io { path: path.to_owned(), source }
}

/// A Python tool's project, as its `pyproject.toml` declares it.
#[derive(Debug, Clone)]
pub struct PythonProject {
    pub dir: PathBuf,
    /// The module defining the tool (`[tool.toolhost] module`).
    pub module: String,
}

/// Whether `dir` holds a Python tool (a `pyproject.toml` with a `[tool.toolhost]` table).
pub fn is_python_tool(dir: &Path) -> bool {
    PythonProject::open(dir).is_ok()
}

impl PythonProject {
    pub fn open(dir: &Path) -> Result<Self, PythonBuildError> {
        let path = dir.join("pyproject.toml");
        let project = |reason: String| PythonBuildError::Project { path: path.clone(), reason, source: None };
        let unreadable = |reason: &str, source: Source| PythonBuildError::Project {
            path: path.clone(),
            reason: reason.into(),
            source: Some(source),
        };
        let text = fs::read_to_string(&path).map_err(|e| unreadable("cannot be read", Source::new(e)))?;
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| unreadable("is not TOML", Source::new(e)))?;
        let table = doc
            .get("tool")
            .and_then(|t| t.get("toolhost"))
            .ok_or_else(|| project("no [tool.toolhost] table (it names the tool's module)".into()))?;
        let module = table
            .get("module")
            .and_then(|m| m.as_str())
            .filter(|m| !m.is_empty() && m.split('.').all(is_identifier))
            .ok_or_else(|| project("[tool.toolhost] needs `module = \"<python module>\"`".into()))?;
        Ok(Self { dir: dir.to_owned(), module: module.to_owned() })
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Serializes installs and builds within a process; a lock file covers other processes.
static LOCK: Mutex<()> = Mutex::new(());

fn run(mut command: Command, step: &str) -> Result<Output, PythonBuildError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command.stdin(Stdio::null()).output().map_err(|source| PythonBuildError::Spawn { program, source })?;
    if !out.status.success() {
        return Err(PythonBuildError::Tool {
            step: step.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out)
}

fn requirements_stamp() -> String {
    hex::encode(Sha256::digest(REQUIREMENTS.as_bytes()))
}

/// Installs the pinned componentize-py into `venv` (creating it with `python3 -m venv`) unless
/// it is there already. Idempotent; quick when installed.
pub fn ensure_toolchain(venv: &Path) -> Result<PathBuf, PythonBuildError> {
    let componentize = venv.join("bin/componentize-py");
    let stamp = venv.join(STAMP);
    if fs::read_to_string(&stamp).is_ok_and(|s| s == requirements_stamp()) && componentize.exists() {
        return Ok(componentize);
    }
    if !venv.join("bin/python").exists() {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        eprintln!("toolhost: creating the Python venv {}", venv.display());
        let mut command = Command::new(&python);
        command.args(["-m", "venv"]).arg(venv);
        run(command, &format!("{python} -m venv {}", venv.display()))?;
    }
    eprintln!("toolhost: installing componentize-py into {} (one 17 MB wheel from PyPI)", venv.display());
    let requirements = venv.join("toolhost-requirements-sdk.txt");
    fs::write(&requirements, REQUIREMENTS).map_err(io(&requirements))?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check", "--require-hashes", "-r"]).arg(&requirements);
    run(pip, "pip install").map_err(|e| match e {
        PythonBuildError::Tool { stderr, .. } => PythonBuildError::Install { venv: venv.to_owned(), stderr },
        other => other,
    })?;
    fs::write(&stamp, requirements_stamp()).map_err(io(&stamp))?;
    Ok(componentize)
}

/// Builds the Python tool in `dir` into `out_dir`, installing the toolchain into `venv` if
/// needed, and returns the component's path. Returns the earlier output if nothing changed.
pub fn build(dir: &Path, venv: &Path, out_dir: &Path) -> Result<PathBuf, PythonBuildError> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let project = PythonProject::open(dir)?;
    fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let lock_path = out_dir.join(".python-build.lock");
    let lock = fs::File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let componentize = ensure_toolchain(venv)?;
    let out = out_dir.join(format!("{}-{}.wasm", project.module, &inputs_hash(&project)?[..16]));
    if out.exists() {
        return Ok(out);
    }
    let stage = tempfile::tempdir_in(out_dir).map_err(io(out_dir))?;
    write_sdk(stage.path())?;
    let world = detect_world(&project, venv, stage.path())?;
    let entry = format!(
        "import {module} as _user\nfrom toolhost_tool._export import exports as _exports\n\n\
         Tool, Stateful = _exports(_user, \"{world}\")\n",
        module = project.module
    );
    let entry_path = stage.path().join(format!("{ENTRY}.py"));
    fs::write(&entry_path, entry).map_err(io(&entry_path))?;
    let partial = stage.path().join("tool.wasm");
    let mut command = Command::new(&componentize);
    command
        .arg("--quiet")
        .arg("-d")
        .arg(stage.path().join("wit"))
        .args(["-w", &world, "componentize", "-p"])
        .arg(&project.dir)
        .arg("-p")
        .arg(stage.path())
        .arg(ENTRY)
        .arg("-o")
        .arg(&partial)
        // Only the tool and the SDK go into the component, not the toolchain's venv.
        .env_remove("VIRTUAL_ENV");
    run(command, &format!("componentize-py on {}", project.dir.display()))?;
    fs::rename(&partial, &out).map_err(io(&out))?;
    Ok(out)
}

fn write_sdk(stage: &Path) -> Result<(), PythonBuildError> {
    let package = stage.join("toolhost_tool");
    fs::create_dir_all(&package).map_err(io(&package))?;
    for (name, text) in SDK_FILES {
        fs::write(package.join(name), text).map_err(io(&package.join(name)))?;
    }
    build_inputs::write_sdk_wit(&stage.join("wit")).map_err(|(path, source)| PythonBuildError::Io { path, source })
}

/// `stateful-tool` if the tool declares `state`, else `plain-tool`: asks the SDK, run by the
/// venv's Python on the tool's module.
fn detect_world(project: &PythonProject, venv: &Path, stage: &Path) -> Result<String, PythonBuildError> {
    let mut python = Command::new(venv.join("bin/python"));
    let path = std::env::join_paths([stage, &project.dir]).map_err(|e| PythonBuildError::Project {
        path: project.dir.clone(),
        reason: "unusable as PYTHONPATH".into(),
        source: Some(Source::new(e)),
    })?;
    python.env("PYTHONPATH", path).env("PYTHONDONTWRITEBYTECODE", "1").args([
        "-c",
        "import importlib, sys\nfrom toolhost_tool import _export as e\n\
         print(e.world_of(e.find_tool(importlib.import_module(sys.argv[1]))))",
        &project.module,
    ]);
    let out = run(python, &format!("loading the tool module `{}`", project.module))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A hash of the toolchain pin, the SDK, the WIT and the tool's own `.py` and `.toml` files.
fn inputs_hash(project: &PythonProject) -> Result<String, PythonBuildError> {
    let sources = Sources {
        skip_dirs: &["__pycache__", "target", "node_modules"],
        is_source: |name| name.ends_with(".py") || name.ends_with(".toml"),
    };
    let sdk = [SDK_FILES, build_inputs::SDK_WIT].concat();
    build_inputs::hash(&[REQUIREMENTS, &project.module], &sdk, &project.dir, &sources)
        .map_err(|(path, source)| PythonBuildError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_sdk_lists_every_module() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/python/toolhost_tool");
        let mut on_disk: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = SDK_FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(embedded, on_disk, "update SDK_FILES in src/python_build.rs");
    }

    #[test]
    fn project_needs_a_toolhost_table_with_a_module() {
        let dir = tempfile::tempdir().unwrap();
        let pyproject = dir.path().join("pyproject.toml");
        assert!(!is_python_tool(dir.path()));
        fs::write(&pyproject, "[project]\nname = \"x\"\n").unwrap();
        let err = PythonProject::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("[tool.toolhost]"), "{err}");
        fs::write(&pyproject, "[tool.toolhost]\nmodule = \"os; import x\"\n").unwrap();
        assert!(PythonProject::open(dir.path()).is_err());
        fs::write(&pyproject, "[tool.toolhost]\nmodule = \"table_tool\"\n").unwrap();
        assert_eq!(PythonProject::open(dir.path()).unwrap().module, "table_tool");
    }
}
