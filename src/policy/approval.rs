//! Which of a tool's calls a person must approve before an agent's run makes them.
//!
//! ```toml
//! [tools.notes]
//! approval = "always"                       # every call; "never" is the default
//!
//! [tools.mailer.approval]
//! when = { op = ["send", "delete"] }        # calls whose input field `op` is one of these
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// When a tool's calls need approval. See the module doc for the TOML forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Approval {
    /// `"always"` or `"never"`.
    Mode(ApprovalMode),
    /// A call needs approval when one of the input's top-level fields has one of the listed
    /// values (a string compared as is; a number or boolean by its JSON text).
    When(FieldValues),
}

/// `{ when = { FIELD = [VALUE, ...], ... } }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldValues {
    pub when: BTreeMap<String, Vec<String>>,
}

/// The two fixed answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalMode {
    #[default]
    Never,
    Always,
}

impl Default for Approval {
    fn default() -> Self {
        Self::Mode(ApprovalMode::Never)
    }
}

impl Approval {
    pub fn is_never(&self) -> bool {
        *self == Self::Mode(ApprovalMode::Never)
    }

    /// Whether a call with `input` needs approval.
    pub fn requires(&self, input: &serde_json::Value) -> bool {
        match self {
            Self::Mode(mode) => *mode == ApprovalMode::Always,
            Self::When(FieldValues { when }) => when.iter().any(|(field, values)| {
                let text = match input.get(field) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
                    _ => return false,
                };
                values.contains(&text)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        approval: Approval,
    }

    fn parse(text: &str) -> Result<Approval, toml::de::Error> {
        toml::from_str::<Holder>(text).map(|h| h.approval)
    }

    #[test]
    fn fixed_modes_and_field_predicates() {
        assert!(parse("approval = \"always\"").unwrap().requires(&json!({})));
        assert!(!parse("approval = \"never\"").unwrap().requires(&json!({})));
        let when = parse("approval = { when = { op = [\"delete\", \"send\"], n = [\"3\"] } }").unwrap();
        assert!(when.requires(&json!({"op": "delete"})));
        assert!(when.requires(&json!({"op": "add", "n": 3})));
        assert!(!when.requires(&json!({"op": "add", "n": 4})));
        assert!(!when.requires(&json!({"op": {"nested": "delete"}})), "only scalars match");
        assert!(!when.requires(&json!("delete")), "not an object");
    }

    #[test]
    fn unknown_modes_and_keys_are_refused() {
        assert!(parse("approval = \"sometimes\"").is_err());
        assert!(parse("approval = { if = { op = [\"x\"] } }").is_err());
        assert!(parse("approval = { when = { op = \"x\" } }").is_err(), "values are a list");
    }
}
