use crate::bindings::toolhost::tool::types;

/// Access a tool asks for on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// What a tool asks the host to grant. Declaring a need here does not grant it: the host's
/// policy decides, and `toolhost inspect --policy` shows requested against granted.
///
/// ```ignore
/// Capabilities::new().state("notes", Access::ReadWrite).model("default")
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    state: Vec<(String, Access)>,
    models: Vec<String>,
    filesystem: Vec<(String, Access)>,
    network: Vec<String>,
    env: Vec<String>,
}

impl Capabilities {
    /// Asks for nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A state namespace (see [`crate::state`]).
    pub fn state(mut self, namespace: impl Into<String>, access: Access) -> Self {
        self.state.push((namespace.into(), access));
        self
    }

    /// A model alias (see [`crate::model`]).
    pub fn model(mut self, alias: impl Into<String>) -> Self {
        self.models.push(alias.into());
        self
    }

    /// A directory at `guest_path` inside the sandbox.
    pub fn filesystem(mut self, guest_path: impl Into<String>, access: Access) -> Self {
        self.filesystem.push((guest_path.into(), access));
        self
    }

    /// Outgoing HTTP(S) to `host` (`*.example.com` allowed).
    pub fn network(mut self, host: impl Into<String>) -> Self {
        self.network.push(host.into());
        self
    }

    /// An environment variable.
    pub fn env(mut self, name: impl Into<String>) -> Self {
        self.env.push(name.into());
        self
    }

    pub(crate) fn into_wit(self) -> types::Capabilities {
        fn access(a: Access) -> types::Access {
            match a {
                Access::Read => types::Access::Read,
                Access::ReadWrite => types::Access::ReadWrite,
            }
        }
        types::Capabilities {
            state: self
                .state
                .into_iter()
                .map(|(namespace, a)| types::StateRequest { namespace, access: access(a) })
                .collect(),
            models: self.models,
            filesystem: self
                .filesystem
                .into_iter()
                .map(|(guest_path, a)| types::FilesystemRequest { guest_path, access: access(a) })
                .collect(),
            network: self.network,
            env: self.env,
        }
    }
}
