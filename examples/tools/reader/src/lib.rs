//! A file-reading tool: reads text files (or lists folders) under `/docs`, the folder the
//! host's policy mounts read-only. Without that grant every read fails with `denied`: the
//! sandbox has no other files.
//!
//! `{"path": "prices.txt"}` -> `{"path": "prices.txt", "text": "..."}`
//! `{"path": "."}` -> `{"path": ".", "entries": ["prices.txt", ...]}`

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use toolhost_guest::{Access, Capabilities, JsonSchema, Tool, ToolError, export_tool};

const ROOT: &str = "/docs";
/// Longest text returned; longer files are cut (and say so).
const MAX_BYTES: u64 = 16 * 1024;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// A file or folder under /docs, relative to it, e.g. `prices.txt` or `.`.
    path: String,
}

#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
enum Output {
    File {
        path: String,
        text: String,
        /// True when the file is longer than what `text` holds.
        truncated: bool,
    },
    Folder {
        path: String,
        entries: Vec<String>,
    },
}

#[derive(Default)]
struct Reader;

/// `path` inside [`ROOT`], refusing anything that would leave it. The preopen enforces the
/// same boundary; checking here gives the model a clear message instead of a WASI error.
fn resolve(path: &str) -> Result<PathBuf, ToolError> {
    let relative = path.trim().trim_start_matches(ROOT).trim_start_matches('/');
    let mut resolved = PathBuf::from(ROOT);
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => resolved.push(part),
            Component::CurDir => {}
            _ => return Err(ToolError::invalid_input(format!("`{path}` leaves {ROOT}: use a path inside it"))),
        }
    }
    Ok(resolved)
}

fn io_error(path: &str, e: std::io::Error) -> ToolError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ToolError::invalid_input(format!("no file or folder `{path}` in {ROOT}")),
        std::io::ErrorKind::PermissionDenied => ToolError::Denied(format!("reading `{path}`: {e}")),
        _ => ToolError::Failed(format!("reading `{path}`: {e}")),
    }
}

impl Tool for Reader {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "reader";
    const DESCRIPTION: &'static str =
        "Reads a text file from the documents folder, or lists the folder. Input: the file's path, e.g. prices.txt.";

    fn capabilities() -> Capabilities {
        Capabilities::new().filesystem(ROOT, Access::Read)
    }

    fn call(&mut self, input: Input) -> Result<Output, ToolError> {
        let path = resolve(&input.path)?;
        if std::fs::metadata(ROOT).is_err() {
            return Err(ToolError::Denied(format!("the host has not granted this tool the {ROOT} folder")));
        }
        let shown = input.path.trim().to_owned();
        let metadata = std::fs::metadata(&path).map_err(|e| io_error(&shown, e))?;
        if metadata.is_dir() {
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(&path).map_err(|e| io_error(&shown, e))? {
                let entry = entry.map_err(|e| io_error(&shown, e))?;
                let mut name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    name.push('/');
                }
                entries.push(name);
            }
            entries.sort();
            return Ok(Output::Folder { path: shown, entries });
        }
        let mut bytes = Vec::new();
        let file = std::fs::File::open(&path).map_err(|e| io_error(&shown, e))?;
        file.take(MAX_BYTES).read_to_end(&mut bytes).map_err(|e| io_error(&shown, e))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ToolError::invalid_input(format!("`{shown}` is not a UTF-8 text file")))?;
        Ok(Output::File { path: shown, text, truncated: metadata.len() > MAX_BYTES })
    }
}

export_tool!(Reader);
