//! A loaded tool: its compiled component, ready to instantiate, and what it says about itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::{Component, InstancePre, types::ComponentItem};

use crate::bindings::{self, stateful, tool as tool_export, types as wit};
use crate::contract::{Access, CapabilityRow};
pub use crate::contract::{Capabilities, Descriptor, FilesystemRequest, StateRequest};
use crate::engine::CacheStatus;
use crate::error::{LoadError, Source};
use crate::instance::{Blueprint, CallBounds, InstanceState};
use crate::policy::ToolGrants;

/// The export every tool has.
pub(crate) const TOOL_EXPORT: &str = "toolhost:tool/tool@0.1.0";
/// The export of tools whose state the host snapshots.
pub(crate) const STATEFUL_EXPORT: &str = "toolhost:tool/stateful@0.1.0";
/// The export by which a tool declares it keeps no in-memory state between calls.
pub(crate) const STATELESS_EXPORT: &str = "toolhost:tool/stateless@0.1.0";

/// Longest tool name.
const MAX_NAME_CHARS: usize = 64;

/// How the host brings a tool's instance back after a restart or hibernation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolKind {
    /// Exports only `tool`: rebuilt by replaying its steps (bounded by `max_replay_steps`).
    Plain,
    /// Also exports `stateful` (snapshot/restore): restored, then the steps since replayed.
    Stateful,
    /// Exports `stateless`, declaring it keeps no in-memory state: a fresh instance is
    /// used as it is, never replayed.
    Stateless,
}

/// A tool, compiled and linked, shared by every session that uses it.
pub struct Tool {
    pub(crate) descriptor: Descriptor,
    pub(crate) kind: ToolKind,
    pub(crate) path: PathBuf,
    pub(crate) cache: CacheStatus,
    pub(crate) grants: Arc<ToolGrants>,
    /// Requests the grants do not cover (denied at use).
    pub(crate) ungranted: Vec<CapabilityRow>,
    pub(crate) blueprint: Blueprint,
    input_validator: jsonschema::Validator,
    output_validator: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.descriptor.name)
            .field("kind", &self.kind)
            .field("digest", &self.blueprint.digest)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Tool {
    pub fn name(&self) -> &str {
        &self.descriptor.name
    }

    /// What bounds each of its guest calls.
    pub(crate) fn bounds(&self) -> CallBounds<'_> {
        CallBounds { tool: self.name(), limits: &self.grants.limits }
    }

    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    pub fn kind(&self) -> ToolKind {
        self.kind
    }

    /// Lowercase hex sha256 of the component file.
    pub fn digest(&self) -> &str {
        &self.blueprint.digest
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this load compiled the component or read it from the compile cache.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache
    }

    pub fn grants(&self) -> &ToolGrants {
        &self.grants
    }

    /// What the tool requests and its grants do not cover, row by row (see
    /// [`crate::policy::compare`]).
    pub fn ungranted(&self) -> &[CapabilityRow] {
        &self.ungranted
    }

    /// Checks `input` against the tool's input schema; one message per violation, each
    /// naming the JSON pointer of the offending value.
    pub fn validate_input(&self, input: &serde_json::Value) -> Result<(), Vec<String>> {
        validate(&self.input_validator, input)
    }

    pub(crate) fn validate_output(&self, output: &serde_json::Value) -> Result<(), Vec<String>> {
        match &self.output_validator {
            Some(v) => validate(v, output),
            None => Ok(()),
        }
    }
}

fn validate(validator: &jsonschema::Validator, value: &serde_json::Value) -> Result<(), Vec<String>> {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() { e.to_string() } else { format!("at `{at}`: {e}") }
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Reads the component at `path`, refusing one over `limit` bytes before reading it whole (a
/// file that grows while it is read is cut at `limit + 1` bytes and refused too).
pub(crate) async fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, LoadError> {
    use tokio::io::AsyncReadExt;
    let read_error = |source| LoadError::Read { path: path.to_owned(), source };
    let file = tokio::fs::File::open(path).await.map_err(read_error)?;
    let size = file.metadata().await.map_err(read_error)?.len();
    if size > limit {
        return Err(LoadError::TooLarge { path: path.to_owned(), size, limit });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).await.map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(LoadError::TooLarge { path: path.to_owned(), size: bytes.len() as u64, limit });
    }
    Ok(bytes)
}

/// Checks that `bytes` is a component, not a core module or something else. The wasm header
/// is 4 magic bytes and a 4-byte version/layer field: layer 0 is a core module, 1 a component.
pub(crate) fn check_component_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm { path: path.to_owned() });
    }
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule { path: path.to_owned() });
    }
    Ok(())
}

/// Names of a component's exports, for error messages.
fn export_names(component: &Component, engine: &wasmtime::Engine) -> String {
    let names: Vec<String> = component.component_type().exports(engine).map(|(name, _)| name.to_string()).collect();
    if names.is_empty() { "nothing".into() } else { names.join(", ") }
}

/// Finds the tool exports; a component that lacks `tool` is of the wrong world.
pub(crate) fn locate_exports(
    path: &Path,
    engine: &wasmtime::Engine,
    pre: &InstancePre<InstanceState>,
) -> Result<(tool_export::GuestIndices, Option<stateful::GuestIndices>), LoadError> {
    let component = pre.component();
    let tool_indices = tool_export::GuestIndices::new(pre).map_err(|e| {
        let has_tool_instance = component
            .component_type()
            .exports(engine)
            .any(|(name, item)| name == TOOL_EXPORT && matches!(item.ty, ComponentItem::ComponentInstance(_)));
        if has_tool_instance {
            LoadError::WrongWorld {
                path: path.to_owned(),
                expected: TOOL_EXPORT,
                found: format!("`{TOOL_EXPORT}` with the wrong shape: {e:#}"),
            }
        } else {
            LoadError::WrongWorld {
                path: path.to_owned(),
                expected: TOOL_EXPORT,
                found: export_names(component, engine),
            }
        }
    })?;
    let exports_stateful = component.component_type().exports(engine).any(|(name, _)| name == STATEFUL_EXPORT);
    let stateful_indices = if exports_stateful {
        Some(stateful::GuestIndices::new(pre).map_err(|e| LoadError::WrongWorld {
            path: path.to_owned(),
            expected: STATEFUL_EXPORT,
            found: format!("`{STATEFUL_EXPORT}` with the wrong shape: {e:#}"),
        })?)
    } else {
        None
    };
    Ok((tool_indices, stateful_indices))
}

/// Whether the component exports the `stateless` declaration.
pub(crate) fn declares_stateless(engine: &wasmtime::Engine, pre: &InstancePre<InstanceState>) -> bool {
    pre.component()
        .component_type()
        .exports(engine)
        .any(|(name, item)| name == STATELESS_EXPORT && matches!(item.ty, ComponentItem::ComponentInstance(_)))
}

fn access(a: wit::Access) -> Access {
    match a {
        wit::Access::Read => Access::Read,
        wit::Access::ReadWrite => Access::ReadWrite,
    }
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Turns the guest's descriptor into ours, checking names and schemas.
pub(crate) fn parse_descriptor(
    path: &Path,
    raw: bindings::types::Descriptor,
) -> Result<(Descriptor, jsonschema::Validator, Option<jsonschema::Validator>), LoadError> {
    let invalid = |reason: String| LoadError::InvalidDescriptor { path: path.to_owned(), reason, source: None };
    let unparsed = |reason: String, source: Source| LoadError::InvalidDescriptor {
        path: path.to_owned(),
        reason,
        source: Some(source),
    };
    if !valid_name(&raw.name) {
        return Err(invalid(format!(
            "name `{}` must be 1-{MAX_NAME_CHARS} chars of [a-z0-9_-]",
            raw.name.escape_debug()
        )));
    }
    let schema = |which: &str, text: &str| -> Result<(serde_json::Value, jsonschema::Validator), LoadError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| unparsed(format!("{which} schema is not JSON"), Source::new(e)))?;
        let validator = jsonschema::validator_for(&value)
            .map_err(|e| unparsed(format!("{which} schema is not a valid JSON Schema"), Source::new(e)))?;
        Ok((value, validator))
    };
    let (input_schema, input_validator) = schema("input", &raw.input_schema)?;
    let (output_schema, output_validator) = match &raw.output_schema {
        Some(text) => {
            let (value, validator) = schema("output", text)?;
            (Some(value), Some(validator))
        }
        None => (None, None),
    };
    let caps = raw.capabilities;
    let descriptor = Descriptor {
        name: raw.name,
        description: raw.description,
        version: raw.version,
        input_schema,
        output_schema,
        capabilities: Capabilities {
            state: caps
                .state
                .into_iter()
                .map(|r| StateRequest { namespace: r.namespace, access: access(r.access) })
                .collect(),
            models: caps.models,
            filesystem: caps
                .filesystem
                .into_iter()
                .map(|r| FilesystemRequest { guest_path: r.guest_path, access: access(r.access) })
                .collect(),
            network: caps.network,
            env: caps.env,
        },
    };
    Ok((descriptor, input_validator, output_validator))
}

/// Everything about a tool except its grants, which the host adds from its policy.
pub(crate) struct Loaded {
    pub descriptor: Descriptor,
    pub kind: ToolKind,
    pub path: PathBuf,
    pub cache: CacheStatus,
    pub blueprint: Blueprint,
    pub input_validator: jsonschema::Validator,
    pub output_validator: Option<jsonschema::Validator>,
}

impl Loaded {
    pub(crate) fn into_tool(self, grants: ToolGrants) -> Tool {
        let ungranted = crate::policy::compare(&self.descriptor.capabilities, &grants)
            .into_iter()
            .filter(CapabilityRow::is_ungranted)
            .collect();
        Tool {
            ungranted,
            descriptor: self.descriptor,
            kind: self.kind,
            path: self.path,
            cache: self.cache,
            grants: Arc::new(grants),
            blueprint: self.blueprint,
            input_validator: self.input_validator,
            output_validator: self.output_validator,
        }
    }
}
