//! The tool's environment: exactly the variables its grant names (`[tools.NAME.env]`),
//! literal values or host variables passed through, and none of the host's own. WASI hands
//! the environment over as a whole when the instance starts, so a requested variable that is
//! not granted is recorded as a denial then (there is no later use to deny) and is simply
//! absent for the tool. The environment is deterministic given the grant, so it is not
//! journaled: replay sees the same variables unless the policy changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmtime_wasi::WasiCtxBuilder;

use super::{Issues, named_rows};
use crate::contract::CapabilityRow;

/// The capability's name in policies, rows and audit events.
pub const NAME: &str = "env";

/// Why an ungranted variable is denied when the instance starts.
pub(crate) const DENIED_AT_START: &str = "not granted: the tool's environment does not contain it";

/// The variables one tool sees, by name.
pub type EnvGrant = BTreeMap<String, EnvValue>;

/// Where the value of an environment variable handed to a tool comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// This literal value (`NAME = "value"`).
    Value(String),
    /// The host's variable of this name, read when an instance starts
    /// (`NAME = { from_host = "HOST_NAME" }`).
    FromHost { from_host: String },
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EnvValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string value or a table `{ from_host = \"NAME\" }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue::Value(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EnvValue, A::Error> {
                let mut from_host = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "from_host" {
                        return Err(serde::de::Error::unknown_field(&key, &["from_host"]));
                    }
                    from_host = Some(map.next_value::<String>()?);
                }
                from_host
                    .map(|from_host| EnvValue::FromHost { from_host })
                    .ok_or_else(|| serde::de::Error::missing_field("from_host"))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl EnvValue {
    /// The value to hand over now; `None` if it comes from a host variable that is unset.
    pub fn resolve(&self) -> Option<String> {
        match self {
            EnvValue::Value(v) => Some(v.clone()),
            EnvValue::FromHost { from_host } => std::env::var(from_host).ok(),
        }
    }
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// Checks variable names and values (no `=` or NUL where WASI cannot carry them).
pub(crate) fn validate(grant: &EnvGrant, issues: &mut Issues) {
    for (name, value) in grant {
        if !valid_env_name(name) {
            issues.push(&[NAME, name], "a variable name must be non-empty, without `=` or NUL");
        }
        match value {
            EnvValue::Value(v) if v.contains('\0') => {
                issues.push(&[NAME, name], "the value contains a NUL byte");
            }
            EnvValue::FromHost { from_host } if !valid_env_name(from_host) => {
                issues.push(&[NAME, name, "from_host"], "not a valid variable name");
            }
            _ => {}
        }
    }
}

/// Each requested variable against the grant, then each granted one nobody requested.
pub(crate) fn compare(requested: &[String], grant: &EnvGrant, rows: &mut Vec<CapabilityRow>) {
    named_rows(NAME, requested, grant.keys(), rows);
}

/// Puts the granted variables into the instance's WASI context; a host variable that is
/// not set is left out, with a warning.
pub(crate) fn configure(wasi: &mut WasiCtxBuilder, grant: &EnvGrant, session: &str, tool: &str) {
    for (name, value) in grant {
        match value.resolve() {
            Some(value) => {
                wasi.env(name, value);
            }
            None => tracing::warn!(session, tool, variable = %name,
                "the policy passes through a host variable that is not set; the tool will not see it"),
        }
    }
}
