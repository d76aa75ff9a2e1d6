//! The crate's top-level modules form no import cycle: each `src/<module>` may name another
//! (`crate::<module>`, `use crate::{<module>, ..}`, or a root re-export of one), but never one
//! that names it back, directly or through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn top_level_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(graph.len() > 10, "read too few modules from {}: {graph:?}", src.display());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between top-level modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")];
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph.entry(from.into()).or_default().insert(to.into());
        graph.entry(to.into()).or_default();
    }
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(find_cycle(&graph), None);
}

/// Top-level module name to the modules its files name.
fn module_graph(src: &Path) -> Graph {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let modules: BTreeSet<String> = std::fs::read_dir(src)
        .expect("src/")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let module = name.strip_suffix(".rs").unwrap_or(&name).to_owned();
            (module != "lib" && module != "main").then_some(module)
        })
        .collect();
    let aliases = root_reexports(&lib, &modules);
    let mut graph = Graph::new();
    for module in &modules {
        let mut names = BTreeSet::new();
        for file in rust_files(src, module) {
            let code = strip_comments(&std::fs::read_to_string(&file).unwrap_or_default());
            for name in named_crate_items(&code) {
                let target = aliases.get(&name).unwrap_or(&name);
                if modules.contains(target) && target != module {
                    names.insert(target.clone());
                }
            }
        }
        graph.insert(module.clone(), names);
    }
    graph
}

fn rust_files(src: &Path, module: &str) -> Vec<PathBuf> {
    let file = src.join(format!("{module}.rs"));
    let mut files = if file.is_file() { vec![file] } else { vec![] };
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// Drops `//` comments (doc comments name modules in links without importing them).
fn strip_comments(code: &str) -> String {
    code.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The first path segment after each `crate::`, and each name in `use crate::{..}` groups.
fn named_crate_items(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            names.extend(group.split(',').filter_map(|part| first_ident(part.trim())));
        } else {
            names.extend(first_ident(rest));
        }
    }
    names
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!ident.is_empty()).then_some(ident)
}

/// Names lib.rs re-exports at the root (`pub use module::{A, B}` / `pub use module::x as y`),
/// to the module they come from.
fn root_reexports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    let code = strip_comments(lib);
    for statement in code.split(';') {
        let Some(at) = statement.find("pub use ") else { continue };
        let path = &statement[at + "pub use ".len()..];
        let Some(module) = first_ident(path).filter(|m| modules.contains(m)) else { continue };
        let names = match path.find('{') {
            Some(open) => path[open + 1..].trim_end_matches('}').split(',').map(str::to_owned).collect(),
            None => vec![path.to_owned()],
        };
        for name in names {
            let exported = name.rsplit([':', ' ']).next().unwrap_or("").trim().to_owned();
            if !exported.is_empty() {
                aliases.insert(exported, module.clone());
            }
        }
    }
    aliases
}

/// A cycle as a path that starts and ends at the same module, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        graph: &'a Graph,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[at..].iter().map(|n| n.to_string()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
