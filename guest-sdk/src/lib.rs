//! Write [toolhost] tools in Rust.
//!
//! A tool is a struct with typed input and output. Implement [`Tool`], export it with
//! [`export_tool!`] (or [`export_stateful_tool!`] if its in-memory state should survive
//! restarts), and build with `cargo build --target wasm32-wasip2 --release`. The SDK
//! generates the component bindings, the JSON Schema that `describe` reports, input
//! validation with clear errors, and snapshot/restore from the tool's serde state.
//!
//! ```ignore
//! use toolhost_guest::{JsonSchema, Tool, ToolError, export_tool};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Input { text: String }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Output { words: usize }
//!
//! #[derive(Default)]
//! struct WordCount;
//!
//! impl Tool for WordCount {
//!     type Input = Input;
//!     type Output = Output;
//!     const NAME: &'static str = "word-count";
//!     const DESCRIPTION: &'static str = "Counts the words in a text.";
//!
//!     fn call(&mut self, input: Input) -> Result<Output, ToolError> {
//!         Ok(Output { words: input.text.split_whitespace().count() })
//!     }
//! }
//!
//! export_tool!(WordCount);
//! ```
//!
//! Everything a tool touches outside its own memory goes through the host and is granted
//! by the host's policy: [`state`] (persisted key-value state), [`model`] (language-model
//! calls), [`http`] (outgoing HTTP to allowed hosts), files under granted preopens (plain
//! `std::fs`) and [`log`]. A use that was not granted comes back as a `Denied` error, which `?`
//! turns into [`ToolError::Denied`].
//!
//! [toolhost]: https://crates.io/crates/toolhost

#[doc(hidden)]
pub mod bindings;
mod capabilities;
mod error;
pub mod http;
pub mod log;
pub mod model;
pub mod state;
mod tool;

pub use capabilities::{Access, Capabilities};
pub use error::ToolError;
pub use schemars::JsonSchema;
pub use tool::{Stateful, Tool};

/// Glue used by the export macros. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::export as export_plain_tool;
    pub use crate::bindings::exports::toolhost::tool::tool::{Descriptor, Guest as ToolGuest, ToolError};
    pub use crate::tool::{call, describe, restore, snapshot};
    pub use wit_bindgen;
}
