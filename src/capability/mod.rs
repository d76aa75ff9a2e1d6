//! Host capabilities, one module per WIT import. Each holds the per-instance context the
//! host functions need, implements the generated `Host` trait on it, and adds itself to the
//! linker. Anything a tool was not granted is answered with a typed `denied` error and an
//! audit event, never a trap.

pub mod audit;
pub mod filesystem;
pub mod log;
pub mod model;
pub mod network;
pub mod state;
