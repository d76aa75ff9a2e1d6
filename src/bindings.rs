//! Host bindings for the `toolhost:tool` WIT package, generated once here. wasmtime's
//! `bindgen!` output changes between majors; nothing outside `engine`, `tool`, `session` and
//! `capability` names these types.

wasmtime::component::bindgen!({
    world: "stateful-tool",
    path: "wit",
    // Trappable: a host call past one of the step's host limits ends the call at once.
    imports: { default: async | trappable },
    exports: { default: async },
    // Host-call results are journaled for replay, so the types that cross the boundary
    // must serialize.
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

pub(crate) use exports::toolhost::tool::{stateful, tool};
pub(crate) use toolhost::tool::{log, model, state, types};
