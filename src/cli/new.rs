//! `toolhost new NAME --lang rust|python|ts`: writes a working tool project with a test.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

/// The SDKs of this checkout: a template refers to them by path (the SDKs are not published).
const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Ts,
}

#[derive(clap::Args)]
pub struct Args {
    /// The tool's name: 1-64 chars of [a-z0-9-], starting with a letter
    name: String,
    /// The language of the template
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to write the project [default: ./NAME]
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let names = Names::of(&args.name);
    let files = match args.lang {
        Lang::Rust => rust(&names),
        Lang::Python => python(&names),
        Lang::Ts => typescript(&names),
    };
    for (path, text) in &files {
        write(&dir.join(path), text)?;
    }
    let test = match args.lang {
        Lang::Rust => format!("cd {} && cargo test", dir.display()),
        Lang::Python => format!("cd {} && PYTHONPATH={REPO}/sdk/python python3 -m unittest", dir.display()),
        Lang::Ts => format!("toolhost build --test {}", dir.display()),
    };
    eprintln!("toolhost: wrote the tool `{}` in {}", args.name, dir.display());
    eprintln!("  test:  {test}");
    eprintln!("  build: toolhost build {}", dir.display());
    println!("{}", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!("the tool name must be 1-64 chars of [a-z0-9-] starting with a letter, not {name:?}");
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The tool's name in each language's conventions.
struct Names {
    /// `word-count`: the tool's and package's name.
    kebab: String,
    /// `word_count`: a Python module.
    snake: String,
    /// `WordCount`: a type.
    camel: String,
}

impl Names {
    fn of(name: &str) -> Self {
        let camel = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
            })
            .collect();
        Self { kebab: name.to_owned(), snake: name.replace('-', "_"), camel }
    }

    /// `template` with `{kebab}`, `{snake}`, `{camel}` and `{repo}` filled in.
    fn fill(&self, template: &str) -> String {
        template
            .replace("{kebab}", &self.kebab)
            .replace("{snake}", &self.snake)
            .replace("{camel}", &self.camel)
            .replace("{repo}", REPO)
    }
}

fn rust(names: &Names) -> Vec<(String, String)> {
    vec![("Cargo.toml".into(), names.fill(RUST_MANIFEST)), ("src/lib.rs".into(), names.fill(RUST_LIB))]
}

fn python(names: &Names) -> Vec<(String, String)> {
    vec![
        ("pyproject.toml".into(), names.fill(PYTHON_PROJECT)),
        (format!("{}.py", names.snake), names.fill(PYTHON_TOOL)),
        (format!("test_{}.py", names.snake), names.fill(PYTHON_TEST)),
    ]
}

fn typescript(names: &Names) -> Vec<(String, String)> {
    vec![
        ("package.json".into(), names.fill(TS_PACKAGE)),
        (format!("src/{}.ts", names.kebab), names.fill(TS_TOOL)),
        (format!("tests/{}.test.ts", names.kebab), names.fill(TS_TEST)),
        (".gitignore".into(), ".toolhost-build/\n.toolhost-js/\nnode_modules/\n".into()),
    ]
}

const RUST_MANIFEST: &str = r#"[package]
name = "{kebab}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
toolhost-guest = { path = "{repo}/guest-sdk" }
serde = { version = "1", features = ["derive"] }
schemars = "1.2"

# A workspace of its own, so the tool builds wherever it lives.
[workspace]

# `toolhost build` builds with this profile: a small component that compiles fast.
[profile.guest]
inherits = "release"
opt-level = "s"
lto = true
strip = true
codegen-units = 1
panic = "abort"
"#;

const RUST_LIB: &str = r#"//! {kebab}: counts the words in a text.

use serde::{Deserialize, Serialize};
use toolhost_guest::{JsonSchema, Tool, ToolError, export_stateless_tool};

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// The text to count.
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    words: usize,
}

#[derive(Default)]
struct {camel};

fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

impl Tool for {camel} {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "{kebab}";
    const DESCRIPTION: &'static str = "Counts the words in a text.";

    fn call(&mut self, input: Input) -> Result<Output, ToolError> {
        if input.text.trim().is_empty() {
            return Err(ToolError::InvalidInput("at `text`: empty".into()));
        }
        Ok(Output { words: count_words(&input.text) })
    }
}

export_stateless_tool!({camel});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_and_refuses_an_empty_text() {
        assert_eq!(count_words("one two  three\n"), 3);
        let err = {camel}.call(Input { text: " ".into() }).err().expect("an error");
        assert!(matches!(err, ToolError::InvalidInput(_)));
    }
}
"#;

const PYTHON_PROJECT: &str = r#"[project]
name = "{kebab}"
version = "0.1.0"
description = "A toolhost tool: counts the words in a text."

[tool.toolhost]
module = "{snake}"
"#;

const PYTHON_TOOL: &str = r#""""{kebab}: counts the words in a text."""

from dataclasses import dataclass
from typing import Annotated

from toolhost_tool import InvalidInput, Tool


@dataclass
class Input:
    text: Annotated[str, "The text to count."]


@dataclass
class Output:
    words: int


class {camel}(Tool):
    """Counts the words in a text."""

    name = "{kebab}"

    def call(self, input: Input) -> Output:
        if not input.text.strip():
            raise InvalidInput("at `text`: empty")
        return Output(words=len(input.text.split()))
"#;

const PYTHON_TEST: &str = r#""""Run with: PYTHONPATH={repo}/sdk/python python3 -m unittest"""

import unittest

from toolhost_tool import InvalidInput

from {snake} import Input, {camel}


class {camel}Test(unittest.TestCase):
    def test_counts_words(self):
        self.assertEqual({camel}().call(Input(text="one two  three\n")).words, 3)

    def test_refuses_an_empty_text(self):
        with self.assertRaises(InvalidInput):
            {camel}().call(Input(text=" "))


if __name__ == "__main__":
    unittest.main()
"#;

const TS_PACKAGE: &str = r#"{
  "name": "{kebab}",
  "version": "0.1.0",
  "private": true,
  "description": "A toolhost tool: counts the words in a text.",
  "type": "module",
  "toolhost": { "main": "src/{kebab}.ts" }
}
"#;

const TS_TOOL: &str = r#"// {kebab}: counts the words in a text.

import { defineTool, InvalidInput, t } from "@toolhost/tool";

export function countWords(text: string): number {
  return text.split(/\s+/u).filter((word) => word !== "").length;
}

export default defineTool({
  name: "{kebab}",
  description: "Counts the words in a text.",
  input: t.object({ text: t.string().describe("The text to count.") }),
  output: t.object({ words: t.integer() }),
  call({ text }) {
    if (text.trim() === "") throw new InvalidInput("at `text`: empty");
    return { words: countWords(text) };
  },
});
"#;

const TS_TEST: &str = r#"// Run with `toolhost build --test .` (Node's test runner, on the SDK's test host).
import assert from "node:assert/strict";
import { test } from "node:test";

import { testing } from "@toolhost/tool/testing";

import tool, { countWords } from "../src/{kebab}.js";

test("counts words", async () => {
  assert.equal(countWords("one two  three\n"), 3);
  assert.deepEqual(await testing.call(tool, { text: "one two" }), { ok: { words: 2 } });
});

test("refuses an empty text", async () => {
  const out = await testing.call(tool, { text: " " });
  assert.deepEqual(out.err, { tag: "invalid-input", val: "at `text`: empty" });
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_each_languages_conventions() {
        let names = Names::of("word-count2");
        assert_eq!((names.snake.as_str(), names.camel.as_str()), ("word_count2", "WordCount2"));
        assert!(names.fill("{camel}::{kebab}").starts_with("WordCount2::word-count2"));
    }

    #[test]
    fn a_malformed_name_is_refused() {
        for bad in ["", "Word", "1tool", "a_b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("word-count").unwrap();
    }
}
