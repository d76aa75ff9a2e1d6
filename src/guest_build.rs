//! Builds tool crates of a cargo workspace into components, so examples, tests and benches
//! run on a fresh clone with no manual step. Installs the `wasm32-wasip2` target with rustup
//! when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The target tools are built for.
pub const TARGET: &str = "wasm32-wasip2";
/// The cargo profile of the workspace's tools (small, fast-to-compile components).
pub const PROFILE: &str = "guest";

#[derive(Debug, thiserror::Error)]
pub enum GuestBuildError {
    #[error(
        "the `{TARGET}` Rust target is not installed and `rustup target add {TARGET}` failed: {0}\n\
         install it by hand with: rustup target add {TARGET}"
    )]
    TargetMissing(String),
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Cargo { command: String, status: String, stderr: String },
    #[error("cannot run `{program}`")]
    Spawn { program: String, source: std::io::Error },
}

/// Serializes builds within a process; cargo's own lock covers other processes.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(mut command: Command) -> Result<std::process::Output, GuestBuildError> {
    let program = command.get_program().to_string_lossy().into_owned();
    command.output().map_err(|source| GuestBuildError::Spawn { program, source })
}

/// Makes sure the standard library for [`TARGET`] is installed, installing it with rustup
/// if needed. Idempotent and quick when the target is there.
pub fn ensure_target() -> Result<(), GuestBuildError> {
    let mut rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    rustc.args(["--print", "sysroot"]);
    let sysroot = run(rustc)?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).join("lib").is_dir() {
        return Ok(());
    }
    eprintln!("toolhost: installing the {TARGET} Rust target (rustup target add {TARGET})");
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    let out = run(rustup).map_err(|e| GuestBuildError::TargetMissing(e.to_string()))?;
    if !out.status.success() {
        return Err(GuestBuildError::TargetMissing(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}

/// Builds `packages` of the workspace at `workspace` for [`TARGET`] with the [`PROFILE`]
/// profile and returns the component paths, in the order given. Cargo skips the work when
/// nothing changed.
pub fn build(workspace: &Path, packages: &[&str]) -> Result<Vec<PathBuf>, GuestBuildError> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    ensure_target()?;
    let mut command = Command::new(cargo());
    command.current_dir(workspace).args(["build", "--quiet", "--target", TARGET, "--profile", PROFILE]);
    for package in packages {
        command.args(["-p", package]);
    }
    // Flags meant for the host build (coverage, sanitizers) do not apply to guests.
    command.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS");
    let out = run(command)?;
    if !out.status.success() {
        return Err(GuestBuildError::Cargo {
            command: format!("cargo build --target {TARGET} --profile {PROFILE} -p {}", packages.join(" -p ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let dir = target_dir(workspace).join(TARGET).join(PROFILE);
    // A binary keeps the package name; a cdylib's file uses the crate name (`-` -> `_`).
    Ok(packages
        .iter()
        .map(|p| {
            let bin = dir.join(format!("{p}.wasm"));
            if bin.exists() { bin } else { dir.join(format!("{}.wasm", p.replace('-', "_"))) }
        })
        .collect())
}

fn target_dir(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace.join("target"),
    }
}
