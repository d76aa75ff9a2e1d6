//! toolhost's own data contract: the types the public API exposes and the store persists,
//! independent of wasmtime's generated bindings (converted from and to them at the
//! capability boundary). This module depends on nothing else in the crate, so every other
//! module can use it without an import cycle.

mod coverage;
mod descriptor;

pub use coverage::{CapabilityRow, Coverage};
pub use descriptor::{Access, Capabilities, Descriptor, FilesystemRequest, StateRequest};
