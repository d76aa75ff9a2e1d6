//! Integration tests: one binary (one link on 2 cores), a module per concern.

mod cache;
mod crash;
mod durable;
mod hostile;
mod isolation;
mod load_errors;
mod model_faults;
mod model_local;
mod state;
mod support;
mod tools;
