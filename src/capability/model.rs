//! The `model` import. Grants are checked here; the providers that answer granted calls are
//! configured on the host (see the model-provider work). Until a provider is configured for
//! an alias, a granted call gets a `provider-error` naming the missing alias.

use std::collections::BTreeSet;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::model::{self as wit, ChatRequest, ChatResponse, ModelError, ProviderFailure};

/// Per-instance model context.
pub struct ModelCtx {
    session: String,
    tool: String,
    granted: Arc<BTreeSet<String>>,
}

impl ModelCtx {
    pub(crate) fn new(session: String, tool: String, granted: Arc<BTreeSet<String>>) -> Self {
        Self { session, tool, granted }
    }
}

impl wit::Host for ModelCtx {
    async fn chat(&mut self, model: String, _request: ChatRequest) -> Result<ChatResponse, ModelError> {
        let request = format!("chat {}", model.escape_debug());
        if !self.granted.contains(&model) {
            let reason = format!("model `{}` is not granted", model.escape_debug());
            super::audit(&self.session, &self.tool, "model", &request, false, &reason);
            return Err(ModelError::Denied(reason));
        }
        super::audit(&self.session, &self.tool, "model", &request, true, "granted");
        Err(ModelError::ProviderError(ProviderFailure {
            status: None,
            message: format!("no model provider is configured for `{}`", model.escape_debug()),
        }))
    }
}

struct HasModel;

impl HasData for HasModel {
    type Data<'a> = &'a mut ModelCtx;
}

pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ModelCtx,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasModel>(linker, get)
}
