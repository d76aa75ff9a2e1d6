//! A model-calling tool: summarizes a text through the host's `model` capability.
//!
//! The tool never sees a provider or a key: it names the alias `default`, which the host's
//! configuration maps to a provider and model, and the host's policy decides whether this
//! tool may use it, how many tokens per call and per session, and how often. The answer is
//! asked for as JSON matching [`Digest`]'s schema, so it decodes into fields, not prose.

use serde::{Deserialize, Serialize};
use toolhost_guest::model::{self, ChatRequest, Message};
use toolhost_guest::{Capabilities, JsonSchema, Tool, ToolError, export_tool, log};

/// The alias this tool asks the host for.
const MODEL: &str = "default";
const MAX_TEXT: usize = 32 * 1024;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The text to summarize (at most 32 KiB).
    text: String,
    /// Upper bound on the summary's length, in words.
    #[serde(default = "default_words")]
    max_words: u32,
}

fn default_words() -> u32 {
    40
}

/// What the model is asked to produce.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Digest {
    #[schemars(length(max = 400))]
    summary: String,
    #[schemars(length(max = 3))]
    key_points: Vec<String>,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    summary: String,
    key_points: Vec<String>,
    /// The provider's model id that answered.
    model: String,
    input_tokens: u32,
    output_tokens: u32,
}

#[derive(Default)]
struct Summarizer;

impl Tool for Summarizer {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "summarizer";
    const DESCRIPTION: &'static str = "Summarizes a text in a few sentences and lists its key points.";

    fn capabilities() -> Capabilities {
        Capabilities::new().model(MODEL)
    }

    fn call(&mut self, input: Input) -> Result<Output, ToolError> {
        if input.text.trim().is_empty() || input.text.len() > MAX_TEXT {
            return Err(ToolError::invalid_input(format!("text must be 1-{MAX_TEXT} bytes")));
        }
        if !(5..=500).contains(&input.max_words) {
            return Err(ToolError::invalid_input("max_words must be 5-500"));
        }
        let request = ChatRequest::new(vec![
            Message::system("You summarize texts accurately and briefly. Reply in JSON."),
            Message::user(format!(
                "Summarize this text in at most {} words, and list up to 3 key points.\n\nText:\n{}",
                input.max_words, input.text
            )),
        ])
        // Roughly 1.5 tokens per word, plus the key points and the JSON around them.
        .max_tokens(input.max_words * 2 + 250)
        .temperature(0.2);
        let (digest, response) = model::structured::<Digest>(MODEL, request)?;
        log::debug(&format!("summarized {} bytes with {}", input.text.len(), response.model));
        Ok(Output {
            summary: digest.summary,
            key_points: digest.key_points,
            model: response.model,
            input_tokens: response.usage.input_tokens,
            output_tokens: response.usage.output_tokens,
        })
    }
}

export_tool!(Summarizer);
