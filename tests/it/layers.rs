//! The module layering ARCHITECTURE.md draws holds: every top-level module of `src/` uses
//! (through `crate::…`) only modules of lower layers, so the dependency graph is a DAG whose
//! shape is declared here. A new module must be placed in a layer; an edge upward or sideways
//! fails with the file that makes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use modules of strictly lower layers only.
const LAYERS: &[(&str, &[&str])] = &[
    ("names", &["route", "labels", "mutex", "timestamp"]),
    ("foundations", &["config", "metrics", "faults", "audit"]),
    ("state", &["flags", "registry"]),
    ("routing", &["routing", "paths"]),
    ("comparison", &["shadow", "auth"]),
    // Carries decided events to the nodes of a fleet; delivers there through `paths`.
    ("fleet", &["backplane"]),
    ("judgement", &["guard"]),
    ("entry", &["server", "client"]),
    // Benchmarks the producer route's parsing (`server::protocol`) beside the paths.
    ("benchmarks", &["microbench"]),
    ("library", &["lib"]),
    // The operator commands, `serve` among them, start the gateway that `lib` assembles.
    ("commands", &["cli"]),
];

/// Items defined in `lib.rs` itself, named as `crate::run` and the like: they are `lib`.
const LIBRARY_ITEMS: &[&str] = &[
    "run",
    "Listeners",
    "BindError",
    "RunError",
    "AuthSetupError",
    "FlagsError",
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file's code names through `crate::`: comments and the unit tests
/// at the end of a file (`#[cfg(test)] mod tests`) aside, since tests may reach anywhere.
fn crate_uses(text: &str) -> BTreeSet<String> {
    let code = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut uses = BTreeSet::new();
    for line in code.lines() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b};`: every first segment in the group.
                let group = group.split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    let name = item.trim().split("::").next().unwrap_or_default();
                    if !name.is_empty() && name != "self" {
                        uses.insert(name.to_owned());
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    uses.insert(name);
                }
            }
        }
    }
    uses
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let first = relative.components().next().expect("a component");
        let first = first.as_os_str().to_str().expect("a UTF-8 name");
        let module = first.strip_suffix(".rs").unwrap_or(first);
        if module == "main" {
            // The binary's crate is another crate: it reaches the library as `switchyard::`.
            continue;
        }
        modules.insert(module.to_owned());
        let Some(layer) = layer_of(module) else {
            violations.push(format!(
                "{}: module `{module}` is in no layer",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for used in crate_uses(&text) {
            let used = if LIBRARY_ITEMS.contains(&used.as_str()) {
                "lib".to_owned()
            } else {
                used
            };
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(other) if other < layer => {}
                Some(other) => violations.push(format!(
                    "{}: `{module}` ({}) uses `{used}` ({})",
                    relative.display(),
                    LAYERS[layer].0,
                    LAYERS[other].0,
                )),
                None => violations.push(format!(
                    "{}: `{module}` uses `{used}`, which is in no layer",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
    // The scan saw the modules it judges: an empty or misread src/ would pass vacuously.
    for expected in ["route", "labels", "paths", "server", "lib"] {
        assert!(
            modules.contains(expected),
            "did not find module `{expected}` in src/"
        );
    }
}

#[test]
fn the_scan_finds_crate_paths_and_groups_and_skips_comments_and_tests() {
    let text = "use crate::route::Route;\nuse crate::{labels::Outcome, metrics};\n\
                // crate::server in a comment\nfn f() { crate::paths::serve(); }\n\
                #[cfg(test)]\nmod tests {\n    use crate::guard::Guard;\n}\n";
    let found: Vec<String> = crate_uses(text).into_iter().collect();
    assert_eq!(found, ["labels", "metrics", "paths", "route"]);
}
