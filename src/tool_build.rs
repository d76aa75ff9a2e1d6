//! `toolhost build PATH`: detects a tool project's language and builds its component, with
//! the same code the tests and examples use (`guest_build` for Rust, `python_build` for Python,
//! `js_build` for TypeScript and JavaScript).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::guest_build::{self, GuestBuildError};
use crate::js_build::{self, JsBuildError};
use crate::python_build::{self, PythonBuildError};
use crate::source::Source;

/// The languages `toolhost build` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// A cargo package (`Cargo.toml` with `[package]`).
    Rust,
    /// A `pyproject.toml` with a `[tool.toolhost]` table.
    Python,
    /// TypeScript or JavaScript: a `package.json` with a `toolhost` field.
    JavaScript,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "{0} is not a tool project: expected a Rust crate (Cargo.toml), a Python tool \
         (pyproject.toml with [tool.toolhost]) or a TypeScript/JavaScript tool (package.json with \"toolhost\")"
    )]
    Unknown(PathBuf),
    /// `reason` says what is wrong with `Cargo.toml`; `source`, if any, why (the read's, the
    /// TOML parser's, or starting cargo's error).
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String, source: Option<Source> },
    #[error(transparent)]
    Rust(#[from] GuestBuildError),
    #[error(transparent)]
    Python(#[from] PythonBuildError),
    #[error(transparent)]
    JavaScript(#[from] JsBuildError),
}

/// The language of the project in `dir`.
pub fn detect(dir: &Path) -> Result<Language, BuildError> {
    if python_build::is_python_tool(dir) {
        return Ok(Language::Python);
    }
    if js_build::is_js_tool(dir) {
        return Ok(Language::JavaScript);
    }
    if dir.join("Cargo.toml").is_file() {
        return Ok(Language::Rust);
    }
    Err(BuildError::Unknown(dir.to_owned()))
}

/// Builds the tool in `dir` and returns the component's path. A Python tool's toolchain goes
/// into `venv` (default: `dir/.venv`), a JS/TS tool's into `js_toolchain` (default:
/// [`js_build::default_toolchain_dir`]); their builds go into `dir/.toolhost-build`.
pub fn build(dir: &Path, venv: Option<&Path>, js_toolchain: Option<&Path>) -> Result<(Language, PathBuf), BuildError> {
    let language = detect(dir)?;
    let component = match language {
        Language::Python => {
            let venv = venv.map(Path::to_owned).unwrap_or_else(|| dir.join(".venv"));
            python_build::build(dir, &venv, &dir.join(".toolhost-build"))?
        }
        Language::JavaScript => {
            let toolchain = js_toolchain.map(Path::to_owned).unwrap_or_else(|| js_build::default_toolchain_dir(dir));
            js_build::build(dir, &toolchain, &dir.join(".toolhost-build"))?
        }
        Language::Rust => {
            let (workspace, package) = cargo_package(dir)?;
            guest_build::build(&workspace, &[&package])?.remove(0)
        }
    };
    Ok((language, component))
}

/// The workspace root and package name of the crate in `dir`.
fn cargo_package(dir: &Path) -> Result<(PathBuf, String), BuildError> {
    let manifest = dir.join("Cargo.toml");
    let bad = |reason: String| BuildError::Manifest { path: manifest.clone(), reason, source: None };
    let failed = |reason: &str, source: Source| BuildError::Manifest {
        path: manifest.clone(),
        reason: reason.into(),
        source: Some(source),
    };
    let text = std::fs::read_to_string(&manifest).map_err(|e| failed("cannot be read", Source::new(e)))?;
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| failed("is not TOML", Source::new(e)))?;
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| bad("no [package] name (a workspace root is not a tool)".into()))?
        .to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(dir)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .output()
        .map_err(|e| failed("cannot run cargo", Source::new(e)))?;
    if !out.status.success() {
        return Err(bad(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let workspace = root.parent().map(Path::to_owned).unwrap_or_else(|| dir.to_owned());
    Ok((workspace, package))
}
