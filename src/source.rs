//! Keeping an error's cause: [`Source`] holds it inside our error types, [`chain`] shows an
//! error with all its causes. A leaf module, so every other module may use it.

use std::sync::Arc;

/// An underlying error kept as a source: its type is hidden, so a backend's error type (rusqlite,
/// tokio-postgres) does not leak through an API that exists with or without that backend, and
/// shared, so the error that holds it stays `Clone`. It derefs to the error itself (for
/// `downcast_ref`), and is deliberately not an `Error` of its own, so `source()` yields the
/// wrapped error, not this wrapper.
#[derive(Clone)]
pub struct Source(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Source {
    /// Keeps `error` (any error, an `anyhow`/`wasmtime::Error`, or a message).
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self(Arc::from(error.into()))
    }
}

impl std::ops::Deref for Source {
    type Target = dyn std::error::Error + Send + Sync + 'static;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

/// `error` with its sources, `error: cause: cause's cause`, for where an error is shown whole
/// (the CLI, MCP results, the agent's prompt, logs). A source whose text the previous message
/// already ends with (some crates print their cause too) is not repeated.
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// See [`chain`].
pub struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !shown.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            next = cause.source();
        }
        Ok(())
    }
}
