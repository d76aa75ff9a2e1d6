use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::{Descriptor, ToolError as WitToolError};
use crate::{Capabilities, JsonSchema, ToolError};

/// A tool: typed input in, typed output out.
///
/// One value of the implementing type lives in the tool's sandbox for the whole session,
/// created with [`Default`] before the first call, so fields can carry in-memory state
/// from one call to the next. Export the type with [`crate::export_tool!`], or with
/// [`crate::export_stateful_tool!`] to have that state snapshotted between steps.
pub trait Tool: Default + 'static {
    /// The call's input. Its JSON Schema (from `schemars`) is what `describe` reports and
    /// what the host validates each input against.
    type Input: DeserializeOwned + JsonSchema;
    /// The call's output. Its JSON Schema is reported as the tool's output schema.
    type Output: Serialize + JsonSchema;

    /// Unique name: 1-64 chars of `[a-z0-9_-]`.
    const NAME: &'static str;
    /// One or two sentences for a model deciding whether to call this tool.
    const DESCRIPTION: &'static str;

    /// What the tool asks the host to grant. Nothing by default.
    fn capabilities() -> Capabilities {
        Capabilities::new()
    }

    /// Handles one call.
    fn call(&mut self, input: Self::Input) -> Result<Self::Output, ToolError>;
}

/// A tool whose in-memory state is snapshotted by the host between steps, as the serde
/// serialization of the tool value. On resume the host restores the latest snapshot into a
/// fresh instance and replays only the steps after it.
///
/// Keep the serialized form backward compatible (`#[serde(default)]` on new fields): a
/// snapshot that fails to deserialize makes the host fall back to a full replay.
pub trait Stateful: Tool + Serialize + DeserializeOwned {}

impl<T: Tool + Serialize + DeserializeOwned> Stateful for T {}

fn schema_json<S: JsonSchema>() -> String {
    serde_json::to_string(&schemars::schema_for!(S)).expect("a JSON Schema always serializes")
}

/// `describe` for `T`; `version` is the tool crate's `CARGO_PKG_VERSION`.
pub fn describe<T: Tool>(version: &str) -> Descriptor {
    Descriptor {
        name: T::NAME.to_string(),
        description: T::DESCRIPTION.to_string(),
        version: version.to_string(),
        input_schema: schema_json::<T::Input>(),
        output_schema: Some(schema_json::<T::Output>()),
        capabilities: T::capabilities().into_wit(),
    }
}

/// `call` for `T`, on the session's tool value (created on first use).
pub fn call<T: Tool>(slot: &mut Option<T>, input: &str) -> Result<String, WitToolError> {
    let mut deserializer = serde_json::Deserializer::from_str(input);
    let parsed: T::Input = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            WitToolError::InvalidInput(inner.to_string())
        } else {
            WitToolError::InvalidInput(format!("at `{path}`: {inner}"))
        }
    })?;
    let tool = slot.get_or_insert_with(T::default);
    let output = tool.call(parsed).map_err(WitToolError::from)?;
    serde_json::to_string(&output).map_err(|e| WitToolError::Failed(format!("output does not serialize to JSON: {e}")))
}

/// `snapshot` for `T`: the serde JSON of the tool value.
pub fn snapshot<T: Stateful>(slot: &mut Option<T>) -> Vec<u8> {
    let tool = slot.get_or_insert_with(T::default);
    serde_json::to_vec(tool).expect("tool state serializes to JSON")
}

/// `restore` for `T`: replaces the tool value with the deserialized snapshot.
pub fn restore<T: Stateful>(slot: &mut Option<T>, bytes: &[u8]) -> Result<(), String> {
    let tool: T = serde_json::from_slice(bytes).map_err(|e| format!("snapshot does not decode: {e}"))?;
    *slot = Some(tool);
    Ok(())
}

/// Exports a [`Tool`] as a toolhost component (the `plain-tool` world).
///
/// The host treats it as stateless, or, if it keeps in-memory state, rebuilds that state on
/// resume by replaying the session's steps. Use [`export_stateful_tool!`] to snapshot instead.
#[macro_export]
macro_rules! export_tool {
    ($tool:ty) => {
        $crate::__export_tool_core!($tool);
    };
}

/// Exports a [`Stateful`] tool (the `stateful-tool` world): the host snapshots the tool value
/// after each committed step and restores it on resume.
#[macro_export]
macro_rules! export_stateful_tool {
    ($tool:ty) => {
        $crate::__export_tool_core!($tool);

        #[doc(hidden)]
        mod __toolhost_stateful {
            // Only stateful tools carry this world, so the host can tell them apart. The WIT
            // text must stay identical to `interface stateful` in wit/tool.wit (a test checks).
            $crate::__private::wit_bindgen::generate!({
                inline: "package toolhost:tool@0.1.0;
                    interface stateful {
                        snapshot: func() -> list<u8>;
                        restore: func(snapshot: list<u8>) -> result<_, string>;
                    }
                    world stateful-exports {
                        export stateful;
                    }",
                world: "stateful-exports",
                runtime_path: "::toolhost_guest::__private::wit_bindgen::rt",
            });

            struct Snapshots;

            impl exports::toolhost::tool::stateful::Guest for Snapshots {
                fn snapshot() -> ::std::vec::Vec<u8> {
                    super::__TOOLHOST_INSTANCE
                        .with(|slot| $crate::__private::snapshot::<super::__ToolhostTool>(&mut slot.borrow_mut()))
                }

                fn restore(bytes: ::std::vec::Vec<u8>) -> ::std::result::Result<(), ::std::string::String> {
                    super::__TOOLHOST_INSTANCE
                        .with(|slot| $crate::__private::restore::<super::__ToolhostTool>(&mut slot.borrow_mut(), &bytes))
                }
            }

            export!(Snapshots);
        }
    };
}

/// Exports a [`Tool`] that keeps no in-memory state between calls (the `stateless-tool`
/// world): the host never replays its steps to rebuild it, so resuming costs the same
/// whatever the session's history. Declare it only if every call's result depends on its
/// input and host calls alone; a tool whose fields carry data from call to call must use
/// [`export_tool!`] (replayed) or [`export_stateful_tool!`] (snapshotted).
#[macro_export]
macro_rules! export_stateless_tool {
    ($tool:ty) => {
        $crate::__export_tool_core!($tool);

        #[doc(hidden)]
        mod __toolhost_stateless {
            // The WIT text must stay identical to `interface stateless` in wit/tool.wit (a
            // test checks).
            $crate::__private::wit_bindgen::generate!({
                inline: "package toolhost:tool@0.1.0;
                    interface stateless {
                        declare-stateless: func();
                    }
                    world stateless-exports {
                        export stateless;
                    }",
                world: "stateless-exports",
                runtime_path: "::toolhost_guest::__private::wit_bindgen::rt",
            });

            struct Declaration;

            impl exports::toolhost::tool::stateless::Guest for Declaration {
                fn declare_stateless() {}
            }

            export!(Declaration);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_tool_core {
    ($tool:ty) => {
        #[doc(hidden)]
        type __ToolhostTool = $tool;

        ::std::thread_local! {
            static __TOOLHOST_INSTANCE: ::std::cell::RefCell<::std::option::Option<$tool>> =
                const { ::std::cell::RefCell::new(::std::option::Option::None) };
        }

        #[doc(hidden)]
        struct __ToolhostExport;

        impl $crate::__private::ToolGuest for __ToolhostExport {
            fn describe() -> $crate::__private::Descriptor {
                $crate::__private::describe::<$tool>(env!("CARGO_PKG_VERSION"))
            }

            fn call(
                input: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, $crate::__private::ToolError> {
                __TOOLHOST_INSTANCE.with(|slot| $crate::__private::call::<$tool>(&mut slot.borrow_mut(), &input))
            }
        }

        $crate::__private::export_plain_tool!(__ToolhostExport);
    };
}

#[cfg(test)]
mod tests {
    fn normalize(text: &str) -> String {
        text.lines()
            .map(|l| l.split("//").next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `interface <name>` of wit/tool.wit, normalized, must appear in this file's macros.
    fn assert_inlined(name: &str) {
        let wit = include_str!("../../wit/tool.wit");
        let header = format!("interface {name} {{");
        let start = wit.find(&header).unwrap_or_else(|| panic!("wit has interface {name}"));
        let end = start + wit[start..].find("\n}").expect("interface closes") + 2;
        let canonical = normalize(&wit[start..end]);
        let inline = normalize(include_str!("tool.rs"));
        assert!(inline.contains(&canonical), "the inlined `{name}` WIT drifted from wit/tool.wit:\n{canonical}");
    }

    #[derive(Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema, Debug, PartialEq)]
    struct V1 {
        text: String,
        count: u64,
    }

    #[derive(Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema, Debug, PartialEq)]
    struct V2 {
        text: String,
        count: u64,
        #[serde(default)]
        tags: Vec<String>,
    }

    macro_rules! tool {
        ($t:ty) => {
            impl super::Tool for $t {
                type Input = ();
                type Output = ();
                const NAME: &'static str = "t";
                const DESCRIPTION: &'static str = "t";
                fn call(&mut self, _: ()) -> Result<(), super::ToolError> {
                    Ok(())
                }
            }
        };
    }
    tool!(V1);
    tool!(V2);

    #[test]
    fn a_snapshot_restores_into_a_version_with_an_added_defaulted_field() {
        let mut old = Some(V1 { text: "x".repeat(10_000), count: 7 });
        let bytes = super::snapshot(&mut old);
        let mut new = None::<V2>;
        super::restore(&mut new, &bytes).unwrap();
        assert_eq!(new, Some(V2 { text: "x".repeat(10_000), count: 7, tags: vec![] }));
    }

    #[test]
    fn a_corrupt_snapshot_is_refused_with_a_reason() {
        let mut restored = None::<V1>;
        let error = super::restore(&mut restored, b"{\"text\": 3").unwrap_err();
        assert!(error.contains("does not decode"), "{error}");
        assert_eq!(restored, None);
    }

    /// The worlds inlined in `export_stateful_tool!` and `export_stateless_tool!` must match wit/tool.wit.
    #[test]
    fn inline_interfaces_match_wit() {
        assert_inlined("stateful");
        assert_inlined("stateless");
    }
}
