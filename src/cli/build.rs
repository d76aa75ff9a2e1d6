use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// The tool project: a Rust crate or a Python tool (pyproject.toml with [tool.toolhost])
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Copy the component here [default: print where it was built]
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// The venv for a Python tool's toolchain (componentize-py), created on first use [default: PATH/.venv]
    #[arg(long)]
    venv: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (language, built) = toolhost::tool_build::build(&args.path, args.venv.as_deref())?;
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
