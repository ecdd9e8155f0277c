//! The layering of `src/` (docs/ARCHITECTURE.md, "Layers"), checked from the code's own
//! `crate::` and `super::` paths: every folder imports only from itself and the layers
//! below it, and no two modules import each other, directly or around a circle. A
//! module's own parent and children do not count (a parent declares its children and a
//! child implements its parent's trait; that is one unit, not a circle).
//!
//! Each test of the checker itself runs it on a small made-up tree, so the check is
//! shown to fail when an upward import or a circle is added.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first. A folder (or a file directly under src/) may import from a
/// layer of lower rank, never from one of the same or a higher rank.
const LAYERS: &[(&str, u8)] = &[
    ("message", 0),
    ("protocol", 1),
    ("policy", 1),
    ("observability", 2),
    ("config", 3),
    ("peer", 4),
    ("delivery", 5),
    ("transport", 6),
    ("state", 7),
    ("serve", 8),
];

/// A module by its path below the crate root (`["delivery", "engine", "redis"]`).
type Module = Vec<String>;

/// Each module's source, by module path: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
/// `lib.rs` (the root, which declares every layer) and `main.rs` (the binary, which
/// reaches the library by its name) are left out.
fn read_tree(src: &Path) -> BTreeMap<Module, String> {
    let mut modules = BTreeMap::new();
    let mut folders = vec![src.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .expect("below src")
                .with_extension("");
            let mut module: Module = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|last| last == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            modules.insert(module, text);
        }
    }
    modules
}

/// The code without `//` comments (prose and doc links name modules without using them)
/// and without its unit tests (the `#[cfg(test)]` module at the end of a file), which
/// may reach anywhere.
fn without_comments(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The leading snake_case segments of a path (`a::b::Type` gives `a`, `b`).
fn module_segments(path: &str) -> Vec<String> {
    path.split("::")
        .map(str::trim)
        .take_while(|segment| {
            segment
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && segment
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// Every module `module` names through `crate::` or `super::`, resolved to the longest
/// prefix that is a module of the tree (`crate::peer::outbox::Outbox` is `peer::outbox`).
fn imports(module: &Module, text: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let code = without_comments(text);
    let resolve = |path: Vec<String>| {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|prefix| known.contains(prefix))
    };
    let mut found = BTreeSet::new();
    for anchor in ["crate::", "super::"] {
        for (at, _) in code.match_indices(anchor) {
            let preceded = code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            if preceded {
                continue;
            }
            let mut rest = &code[at + anchor.len()..];
            let base = if anchor == "crate::" {
                Vec::new()
            } else {
                // `super::super::x` climbs once per `super`.
                let mut up = 1;
                while let Some(more) = rest.strip_prefix("super::") {
                    rest = more;
                    up += 1;
                }
                module[..module.len().saturating_sub(up)].to_vec()
            };
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let mut path = base.clone();
            path.extend(module_segments(&rest[..end]));
            // `use crate::a::{b, c::D}`: each item of the group, after the shared prefix.
            if rest[end..].starts_with('{') && (end == 0 || rest[..end].ends_with("::")) {
                let group = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |i| end + i)];
                for item in group.split(',') {
                    let mut item_path = path.clone();
                    item_path.extend(module_segments(item));
                    found.extend(resolve(item_path));
                }
            }
            found.extend(resolve(path));
        }
    }
    found
}

fn rank(layer: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == layer)
        .map(|&(_, rank)| rank)
}

/// What is wrong with the tree: modules outside every layer, imports that reach up or
/// across, and circles. Empty when the layering holds.
fn check(modules: &BTreeMap<Module, String>) -> Vec<String> {
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    let mut problems = Vec::new();
    let mut graph: BTreeMap<&Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, text) in modules {
        let layer = &module[0];
        let Some(own) = rank(layer) else {
            problems.push(format!("{} is in no layer", module.join("::")));
            continue;
        };
        let imported = imports(module, text, &known);
        for target in &imported {
            let other = &target[0];
            if other != layer && rank(other).is_none_or(|theirs| theirs >= own) {
                problems.push(format!(
                    "{} imports {}: {layer} may not use {other}",
                    module.join("::"),
                    target.join("::")
                ));
            }
        }
        let related = |a: &Module, b: &Module| a.starts_with(b) || b.starts_with(a);
        graph.insert(
            module,
            imported
                .into_iter()
                .filter(|target| !related(module, target))
                .collect(),
        );
    }
    problems.extend(circles(&graph));
    problems
}

/// The import circles of `graph`, each as the modules around it.
fn circles(graph: &BTreeMap<&Module, BTreeSet<Module>>) -> Vec<String> {
    fn visit<'a>(
        module: &'a Module,
        graph: &'a BTreeMap<&Module, BTreeSet<Module>>,
        path: &mut Vec<&'a Module>,
        done: &mut BTreeSet<&'a Module>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|m| *m == module) {
            let circle: Vec<String> = path[at..]
                .iter()
                .chain([&module])
                .map(|m| m.join("::"))
                .collect();
            found.push(format!("import circle: {}", circle.join(" -> ")));
            return;
        }
        if !done.insert(module) {
            return;
        }
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn every_layer_imports_only_from_below_and_no_modules_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = read_tree(&src);
    assert!(modules.len() > 30, "read {} modules", modules.len());
    let problems = check(&modules);
    assert!(
        problems.is_empty(),
        "the layering of src/ (docs/ARCHITECTURE.md, \"Layers\") is broken:\n{}",
        problems.join("\n")
    );
}

/// A made-up tree: `(module path, source)`.
fn tree(modules: &[(&str, &str)]) -> BTreeMap<Module, String> {
    modules
        .iter()
        .map(|(path, text)| {
            (
                path.split("::").map(str::to_owned).collect(),
                (*text).to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_check_finds_an_upward_import() {
    let modules = tree(&[
        ("peer", "pub mod outbox;"),
        ("peer::outbox", "use crate::config::Config;"),
        ("config", ""),
        ("delivery", "pub mod engine;"),
        ("delivery::engine", "use crate::peer::outbox::Outbox;"),
    ]);
    assert_eq!(check(&modules), Vec::<String>::new());
    let mut upward = modules.clone();
    upward.insert(
        vec!["peer".into(), "outbox".into()],
        "use crate::config::Config;\nuse crate::delivery::engine::Engine;".into(),
    );
    let problems = check(&upward);
    assert!(
        problems
            .iter()
            .any(|p| p == "peer::outbox imports delivery::engine: peer may not use delivery"),
        "{problems:?}"
    );
    // A grouped import and a path in code count too; a comment does not.
    let grouped = tree(&[
        (
            "message",
            "use crate::{protocol::Reply};\n// crate::serve::http",
        ),
        ("protocol", "fn f() { crate::serve::connection::go() }"),
        ("serve", "pub mod connection;"),
        ("serve::connection", ""),
    ]);
    let problems = check(&grouped);
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn the_check_finds_a_circle_inside_a_layer_but_not_between_parent_and_child() {
    let modules = tree(&[
        ("serve", "pub mod http;\npub mod connection;"),
        ("serve::http", "use crate::serve::connection::serve;"),
        ("serve::connection", "use super::Thing;"),
    ]);
    assert_eq!(check(&modules), Vec::<String>::new());
    let mut circle = modules.clone();
    circle.insert(
        vec!["serve".into(), "connection".into()],
        "use super::http::Route;".into(),
    );
    let problems = check(&circle);
    assert_eq!(
        problems,
        ["import circle: serve::connection -> serve::http -> serve::connection"],
        "{problems:?}"
    );
}
