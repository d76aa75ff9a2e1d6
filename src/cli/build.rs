use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// The tool project: a Rust crate, a Python tool (pyproject.toml with [tool.toolhost]) or a
    /// TypeScript/JavaScript tool (package.json with "toolhost")
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Copy the component here [default: print where it was built]
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// The venv for a Python tool's toolchain (componentize-py), created on first use [default: PATH/.venv]
    #[arg(long)]
    venv: Option<PathBuf>,
    /// The directory for a TypeScript/JavaScript tool's toolchain (esbuild, componentize-js),
    /// installed with npm on first use [default: the user cache folder's toolhost/js-toolchain]
    #[arg(long)]
    js_toolchain: Option<PathBuf>,
    /// First run a TypeScript/JavaScript tool's unit tests (`*.test.ts`) on the SDK's test host
    #[arg(long)]
    test: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.test {
        if toolhost::tool_build::detect(&args.path)? != toolhost::tool_build::Language::JavaScript {
            anyhow::bail!("--test runs TypeScript/JavaScript tools' tests; use `cargo test` or `python3 -m unittest`");
        }
        let toolchain =
            args.js_toolchain.clone().unwrap_or_else(|| toolhost::js_build::default_toolchain_dir(&args.path));
        toolhost::js_build::test(&args.path, &toolchain)?;
    }
    let (language, built) =
        toolhost::tool_build::build(&args.path, args.venv.as_deref(), args.js_toolchain.as_deref())?;
    let component = match args.out {
        Some(out) => {
            std::fs::copy(&built, &out).with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
            out
        }
        None => built,
    };
    eprintln!("toolhost: built a {language:?} tool");
    println!("{}", component.display());
    Ok(ExitCode::SUCCESS)
}
