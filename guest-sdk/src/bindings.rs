//! The only place that generates bindings for the toolhost WIT package. Generating them in
//! more than one crate of a component fails at link time (duplicate component-type sections).

wit_bindgen::generate!({
    world: "plain-tool",
    path: "../wit",
    pub_export_macro: true,
    default_bindings_module: "::toolhost_guest::bindings",
    generate_all,
});
