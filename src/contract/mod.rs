//! toolhost's own data contract: the types the public API exposes and the store persists,
//! independent of wasmtime's generated bindings (converted from and to them at the
//! capability boundary). This module depends on nothing else in the crate, so every other
//! module can use it without an import cycle. Persisted encodings evolve additively: see
//! [`journal`] for the versioned journal format and [`record`] for the other step columns.

pub(crate) mod bytes;
mod coverage;
mod descriptor;
mod failure;
pub mod http;
pub mod journal;
mod model;
pub mod record;
mod state;
mod upgrade;
pub mod workspace;

pub use coverage::{CapabilityRow, Coverage};
pub use descriptor::{Access, Capabilities, Descriptor, FilesystemRequest, StateRequest};
pub use failure::ToolFailure;
pub use journal::{JOURNAL_FORMAT, JournalEntry, JournalFormatError, RandomState, decode_journal, encode_journal};
pub(crate) use model::canonical_digest;
pub use model::{
    ChatRequest, ChatResponse, FinishReason, Message, ModelError, ProviderFailure, Role, ToolCall, ToolChoice,
    ToolDefinition, Usage,
};
pub use record::{RECORD_FORMAT, RecordFormatError, decode_random, decode_record, encode_record};
pub use state::StateError;
pub use upgrade::{OnUpgrade, Upgrade, UpgradeVia};
