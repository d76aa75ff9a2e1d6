//! Diagnostics to the host's log, tagged by the host with session and tool. Log lines are
//! not part of the tool's result and are not replayed on resume.
//!
//! ```ignore
//! toolhost_guest::log::info(&format!("indexed {n} notes"));
//! ```

use crate::bindings::toolhost::tool::log::{Level, log};

pub fn trace(message: &str) {
    log(Level::Trace, message);
}

pub fn debug(message: &str) {
    log(Level::Debug, message);
}

pub fn info(message: &str) {
    log(Level::Info, message);
}

pub fn warn(message: &str) {
    log(Level::Warn, message);
}

pub fn error(message: &str) {
    log(Level::Error, message);
}
