//! Property tests of the policy parser: it never panics on any text, a policy survives a
//! round trip through TOML, and an unknown key anywhere is reported at its own line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;
use toolhost::{Access, EnvValue, HostPattern, Limits, NetworkGrant, OnUngranted, Policy, Preopen, ToolGrants};

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,12}"
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![Just(Access::Read), Just(Access::ReadWrite)]
}

fn host_pattern() -> impl Strategy<Value = HostPattern> {
    (prop::bool::ANY, "[a-z][a-z0-9]{0,8}", "[a-z]{2,6}", prop::option::of(1u16..)).prop_map(
        |(wildcard, label, tld, port)| {
            let host = if wildcard { format!("*.{label}.{tld}") } else { format!("{label}.{tld}") };
            let text = match port {
                Some(p) => format!("{host}:{p}"),
                None => host,
            };
            text.parse().unwrap()
        },
    )
}

fn env_value() -> impl Strategy<Value = EnvValue> {
    prop_oneof!["[^\u{0}]{0,20}".prop_map(EnvValue::Value), Just(EnvValue::FromHost { from_host: "PATH".into() }),]
}

/// A host directory that exists (the loader checks).
fn existing_dir() -> PathBuf {
    std::env::temp_dir()
}

fn tool_grants() -> impl Strategy<Value = ToolGrants> {
    (
        prop::option::of("[0-9a-f]{64}"),
        prop::collection::btree_map(name(), access(), 0..4),
        prop::collection::btree_set("[a-z0-9.-]{1,12}", 0..3),
        prop::option::of(1u32..100_000),
        prop::collection::btree_map(name(), access(), 0..3),
        prop::collection::vec(host_pattern(), 0..4),
        prop::collection::btree_map("[A-Z_][A-Z0-9_]{0,10}", env_value(), 0..4),
        (1u64..4096, 1u64..600_000, prop::option::of(1u64..u64::MAX / 2), 1usize..(64 << 20)),
    )
        .prop_map(|(sha256, namespaces, aliases, max_tokens, mounts, allow, env, limits)| {
            let mut grants = ToolGrants { sha256, env, ..ToolGrants::default() };
            grants.state.namespaces = namespaces;
            grants.models.aliases = aliases;
            grants.models.max_tokens_per_call = max_tokens;
            grants.filesystem = mounts
                .into_iter()
                .map(|(guest, access)| Preopen { host: existing_dir(), guest: format!("/{guest}"), access })
                .collect();
            grants.network = NetworkGrant { allow, ..NetworkGrant::default() };
            let (mib, cpu_ms, fuel, output) = limits;
            grants.limits = Limits {
                memory_bytes: mib << 20,
                cpu_time: Duration::from_millis(cpu_ms),
                wall_time: Duration::from_millis(cpu_ms.max(60_000)),
                fuel,
                max_output_bytes: output,
                ..Limits::default()
            };
            grants
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::bool::ANY,
        prop_oneof![Just(OnUngranted::DenyAtUse), Just(OnUngranted::Refuse)],
        prop::collection::btree_map(name(), tool_grants(), 0..4),
    )
        .prop_map(|(grant_requested, on_ungranted, tools): (bool, OnUngranted, BTreeMap<String, ToolGrants>)| {
            let mut policy = Policy::deny_all().on_ungranted(on_ungranted);
            policy.grant_requested = grant_requested;
            policy.tools = tools;
            policy
        })
}

/// Fragments of policy files, so random documents reach past the TOML syntax into the
/// policy's own keys and checks.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[tools.a]".to_owned()),
        Just("[tools.a.state]".to_owned()),
        Just("[tools.a.limits]".to_owned()),
        Just("[[tools.a.filesystem]]".to_owned()),
        Just("[tools.a.network]".to_owned()),
        Just("[tools.a.env]".to_owned()),
        Just("namespaces = { n = \"read\" }".to_owned()),
        Just("allow = [\"*.example.com\", \"x:1\"]".to_owned()),
        Just("host = \"/tmp\"".to_owned()),
        Just("guest = \"/data\"".to_owned()),
        Just("access = \"read-write\"".to_owned()),
        Just("memory_mib = 18446744073709551615".to_owned()),
        Just("fuel = 0".to_owned()),
        Just("on_ungranted = \"refuse\"".to_owned()),
        Just("X = { from_host = \"PATH\" }".to_owned()),
        "[a-z_.]{1,12} = [0-9\"a-z\\[\\]{}., ]{0,16}",
        "[\\PC\n]{0,40}",
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_parsed_or_refused_without_panicking(text in "\\PC{0,200}") {
        if let Err(e) = Policy::from_toml(&text, None) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn any_document_of_policy_fragments_is_parsed_or_located(lines in prop::collection::vec(fragment(), 0..12)) {
        let text = lines.join("\n");
        if let Err(e) = Policy::from_toml(&text, None) {
            let line_count = text.lines().count().max(1);
            for issue in e.issues() {
                if let Some(line) = issue.line {
                    prop_assert!(line >= 1 && line <= line_count + 1, "line {line} of {line_count}: {e}");
                }
            }
        }
    }

    #[test]
    fn a_policy_survives_a_round_trip_through_toml(policy in policy()) {
        let text = toml::to_string(&policy).unwrap();
        let parsed = Policy::from_toml(&text, None).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&parsed.tools, &policy.tools, "{}", text);
        prop_assert_eq!(parsed.grant_requested, policy.grant_requested);
        prop_assert_eq!(parsed.on_ungranted, policy.on_ungranted);
    }

    #[test]
    fn an_unknown_key_is_reported_at_its_line(policy in policy(), at in any::<prop::sample::Index>(), key in "zz[a-z]{1,8}") {
        let text = toml::to_string(&policy).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Insert right after a table header, so the key lands in that table.
        let headers: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.starts_with('[')).map(|(i, _)| i).collect();
        let (insert_at, expected_line) = if headers.is_empty() {
            (0, 1)
        } else {
            let h = headers[at.index(headers.len())];
            (h + 1, h + 2)
        };
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        edited.insert(insert_at, format!("{key} = 1"));
        let edited = edited.join("\n");
        let err = Policy::from_toml(&edited, None).expect_err("an unknown key must be refused");
        let issue = &err.issues()[0];
        prop_assert_eq!(issue.line, Some(expected_line), "{}\n{}", err, edited);
        prop_assert!(issue.key.ends_with(&key), "{}", err);
    }
}
