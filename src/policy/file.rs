//! The policy file: TOML in, a checked [`Policy`] out, and errors that name the file, the
//! line and the key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::Policy;

/// One problem in a policy, located as precisely as its source allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssue {
    /// Dotted key path, e.g. `tools.fetch.network.allow[1]`; empty for a syntax error.
    pub key: String,
    /// 1-based line and column in the file, when the policy came from one.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl PolicyIssue {
    pub(super) fn unlocated(key: &[String], message: String) -> Self {
        Self { key: dotted(key), line: None, column: None, message }
    }
}

impl fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a policy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy file {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid policy{}:{}", origin.as_ref().map(|o| format!(" {o}")).unwrap_or_default(), render(issues))]
    Invalid {
        /// The file, if the policy came from one.
        origin: Option<String>,
        issues: Vec<PolicyIssue>,
    },
}

fn render(issues: &[PolicyIssue]) -> String {
    issues.iter().map(|i| format!("\n  {i}")).collect()
}

impl PolicyError {
    /// The located problems (empty for a read error).
    pub fn issues(&self) -> &[PolicyIssue] {
        match self {
            Self::Invalid { issues, .. } => issues,
            Self::Read { .. } => &[],
        }
    }
}

/// The text a policy was parsed from, kept to locate problems found later.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Origin {
    path: Option<PathBuf>,
    source: String,
}

impl Origin {
    pub(super) fn name(&self) -> String {
        self.path.as_ref().map_or_else(|| "(inline)".to_owned(), |p| p.display().to_string())
    }

    pub(super) fn issue(&self, key: &[String], message: String) -> PolicyIssue {
        let span = locate(&self.source, key);
        self.issue_at_span(key, span, message)
    }

    fn issue_at_span(&self, key: &[String], span: Option<Range<usize>>, message: String) -> PolicyIssue {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = line_column(&self.source, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        PolicyIssue { key: dotted(key), line, column, message }
    }
}

fn dotted(key: &[String]) -> String {
    let mut out = String::new();
    for segment in key {
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            let bare =
                !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if bare {
                out.push_str(segment);
            } else {
                out.push_str(&format!("{segment:?}"));
            }
        }
    }
    out
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The span of the value at `key` (or of the deepest part of it that exists).
fn locate(source: &str, key: &[String]) -> Option<Range<usize>> {
    let root = DeTable::parse(source).ok()?;
    let mut span = None;
    let mut table = Some(root.get_ref());
    let mut value: Option<&DeValue> = None;
    for segment in key {
        let next = match (table, value) {
            (Some(t), _) => t.iter().find(|(k, _)| k.get_ref() == segment).map(|(k, v)| (k.span(), v)),
            (None, Some(DeValue::Array(items))) => {
                segment.parse::<usize>().ok().and_then(|i| items.get(i)).map(|v| (v.span(), v))
            }
            _ => None,
        };
        let Some((key_span, v)) = next else { break };
        span = Some(key_span);
        value = Some(v.get_ref());
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    span
}

impl Policy {
    /// Reads and checks the policy file at `path`. Relative host directories of
    /// filesystem grants are resolved against the file's folder.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
        let path = path.as_ref();
        let source =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&source, Some(path))
    }

    /// Parses and checks a policy from TOML text; `path` names it in errors and anchors
    /// relative host directories (without one, they are relative to the working folder).
    pub fn from_toml(source: &str, path: Option<&Path>) -> Result<Policy, PolicyError> {
        let origin = Arc::new(Origin { path: path.map(Path::to_owned), source: source.to_owned() });
        let invalid = |issues| PolicyError::Invalid { origin: Some(origin.name()), issues };

        let deserializer =
            toml::Deserializer::parse(source).map_err(|e| invalid(vec![toml_issue(&origin, &[], &e)]))?;
        let mut policy: Policy = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            use serde_path_to_error::Segment;
            let key: Vec<String> = e
                .path()
                .iter()
                .filter_map(|s| match s {
                    Segment::Seq { index } => Some(index.to_string()),
                    Segment::Map { key } => Some(key.clone()),
                    Segment::Enum { variant } => Some(variant.clone()),
                    Segment::Unknown => None,
                })
                .collect();
            invalid(vec![toml_issue(&origin, &key, e.inner())])
        })?;
        policy.origin = Some(origin);
        if let Some(base) = path.and_then(Path::parent) {
            for grants in policy.tools.values_mut() {
                for preopen in &mut grants.filesystem {
                    if preopen.host.is_relative() {
                        preopen.host = base.join(&preopen.host);
                    }
                }
            }
        }
        policy.validate()?;
        policy.validate_host()?;
        Ok(policy)
    }

    /// Checks what only the host machine can tell: host directories exist, passed-through
    /// variables are set.
    fn validate_host(&self) -> Result<(), PolicyError> {
        let mut issues = Vec::new();
        for (name, grants) in &self.tools {
            for (i, preopen) in grants.filesystem.iter().enumerate() {
                let key = ["tools", name, "filesystem", &i.to_string(), "host"];
                match std::fs::metadata(&preopen.host) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => issues
                        .push(self.issue(&key, format!("host path {} is not a directory", preopen.host.display()))),
                    Err(e) => issues.push(
                        self.issue(&key, format!("host directory {} is not usable: {e}", preopen.host.display())),
                    ),
                }
            }
            for (var, value) in &grants.env {
                if let super::EnvValue::FromHost { from_host } = value
                    && std::env::var_os(from_host).is_none()
                {
                    issues.push(self.issue(
                        &["tools", name, "env", var, "from_host"],
                        format!("host variable `{from_host}` is not set"),
                    ));
                }
            }
        }
        if issues.is_empty() { Ok(()) } else { Err(self.error(issues)) }
    }
}

/// Turns a TOML or serde error into an issue, located at its key when the key path is
/// known (the error's own span may cover a whole array or table), else at the error's span
/// (syntax errors).
fn toml_issue(origin: &Origin, key: &[String], error: &toml::de::Error) -> PolicyIssue {
    let mut key = key.to_vec();
    // For an unknown key, the path ends at its table: name the key itself.
    if let Some(unknown) = error.message().strip_prefix("unknown field `").and_then(|r| r.split('`').next())
        && key.last().map(String::as_str) != Some(unknown)
    {
        key.push(unknown.to_owned());
    }
    let span = if key.is_empty() { None } else { locate(&origin.source, &key) };
    origin.issue_at_span(&key, span.or_else(|| error.span()), error.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(source: &str) -> PolicyIssue {
        let err = Policy::from_toml(source, Some(Path::new("/etc/toolhost/policy.toml"))).unwrap_err();
        assert!(err.to_string().contains("/etc/toolhost/policy.toml"), "{err}");
        err.issues()[0].clone()
    }

    #[test]
    fn unknown_key_is_located() {
        let i = issue("[tools.notes.state]\nnamespaces = { notes = \"read\" }\nquotas = {}\n");
        assert_eq!((i.line, i.key.as_str()), (Some(3), "tools.notes.state.quotas"), "{i}");
        assert!(i.message.contains("unknown field `quotas`"), "{i}");
    }

    #[test]
    fn bad_host_pattern_is_located() {
        let i = issue("[tools.fetch.network]\nallow = [\n  \"ok.example.com\",\n  \"*.com\",\n]\n");
        assert_eq!(i.line, Some(4), "{i}");
        assert!(i.key.starts_with("tools.fetch.network.allow"), "{i}");
        assert!(i.message.contains("`*.com`"), "{i}");
    }

    #[test]
    fn wrong_type_is_located() {
        let i = issue("[tools.notes.limits]\nmemory_mib = \"lots\"\n");
        assert_eq!((i.line, i.key.as_str()), (Some(2), "tools.notes.limits.memory_mib"), "{i}");
    }

    #[test]
    fn syntax_error_is_located() {
        let i = issue("[tools.notes]\nsha256 = \n");
        assert_eq!(i.line, Some(2), "{i}");
    }

    #[test]
    fn semantic_errors_are_located() {
        let i = issue(
            "[tools.reader]\n[[tools.reader.filesystem]]\nhost = \"/\"\nguest = \"data/../x\"\naccess = \"read\"\n",
        );
        assert_eq!((i.line, i.key.as_str()), (Some(4), "tools.reader.filesystem[0].guest"), "{i}");
    }

    #[test]
    fn the_example_policy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy.toml");
        let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let tools: Vec<&str> = policy.tools.keys().map(String::as_str).collect();
        assert_eq!(tools, ["calculator", "fetch", "notes", "reader"]);
        assert!(policy.uses_fuel());
        assert!(policy.tools["reader"].filesystem[0].host.ends_with("examples/policy-data/docs"));
    }

    #[test]
    fn stray_tool_is_located() {
        let policy = Policy::from_toml("[tools.calculator]\n\n[tools.calculater]\n", None).unwrap();
        let err = policy.check_loaded(&["calculator"]).unwrap_err();
        let i = &err.issues()[0];
        assert_eq!((i.line, i.key.as_str()), (Some(3), "tools.calculater"), "{err}");
        assert!(i.message.contains("not loaded"), "{err}");
    }
}
