//! The crate's layout keeps its promise: dependencies between the rooms of
//! `src/` point one way. Each room is a top-level module, except that the
//! mechanism folders `sys/` and `io/` count each file as a room of its own
//! (they must not lean on each other in circles either). `supervisor/` is
//! one room: its files split one owner's work by concern; its pure policy
//! modules must not name the supervisor at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::root;

/// `src/io/ipc.rs` -> `["io", "ipc"]`; `src/io/mod.rs` -> `["io"]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The room a module path belongs to.
fn room(path: &[String]) -> Option<String> {
    match path.first().map(String::as_str) {
        None => None,
        Some(top @ ("sys" | "io")) => Some(match path.get(1) {
            Some(sub) => format!("{top}::{sub}"),
            None => top.to_string(),
        }),
        Some(top) => Some(top.to_string()),
    }
}

/// Every `crate::a::b` and `super::a` path in `text`, made absolute.
fn references(text: &str, module: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    for (start, prefix) in [("crate::", 0usize), ("super::", 1)] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(start) {
            let before = rest[..i].chars().last();
            rest = &rest[i + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let segs: Vec<String> = rest
                .split("::")
                .map(|s| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
                .take_while(|s| !s.is_empty())
                .collect();
            let mut abs = if prefix == 0 {
                Vec::new()
            } else {
                // `super` of a mod.rs file is its folder's parent.
                let depth = if is_mod_file { module.len().saturating_sub(1) } else { module.len() - 1 };
                module[..depth].to_vec()
            };
            abs.extend(segs);
            out.push(abs);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The room graph of `src/`: room -> rooms it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = module_of(rel);
        let Some(from) = room(&module) else { continue }; // lib.rs, main.rs: the top
        let text = std::fs::read_to_string(&f).unwrap();
        let is_mod = rel.file_name().is_some_and(|n| n == "mod.rs");
        let edges = g.entry(from.clone()).or_default();
        for r in references(&text, &module, is_mod) {
            if let Some(to) = room(&r) {
                if to != from && !(from.starts_with(&format!("{to}::")) || to.starts_with(&format!("{from}::"))) {
                    edges.insert(to);
                }
            }
        }
    }
    g
}

/// A cycle in `g`, if there is one.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_rooms_of_src_depend_on_each_other_one_way() {
    let g = graph();
    assert!(g.len() > 10, "the graph was read: {g:?}");
    assert!(g["supervisor"].contains("io::ipc"), "edges are seen: {:?}", g["supervisor"]);
    if let Some(cycle) = find_cycle(&g) {
        panic!("import cycle among the modules of src/: {}", cycle.join(" -> "));
    }
    // The bottom of the stack names nothing above it.
    assert!(g["types"].is_empty(), "types must be leaf types: {:?}", g["types"]);
    for mechanism in g.keys().filter(|k| k.starts_with("sys::")) {
        let above: Vec<_> = g[mechanism].iter().filter(|t| !t.starts_with("sys::") && *t != "types").collect();
        assert!(above.is_empty(), "{mechanism} is an OS mechanism; it must not name {above:?}");
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    g.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
}

#[test]
fn the_reload_and_backoff_policies_know_no_supervisor() {
    for f in ["src/supervisor/reload/policy.rs", "src/supervisor/backoff.rs"] {
        let text = std::fs::read_to_string(root().join(f)).unwrap();
        assert!(!text.contains("Supervisor"), "{f} is pure policy and must not name the Supervisor");
        assert!(!text.contains("crate::sys") && !text.contains("nix::"), "{f} must not touch processes");
    }
}

#[test]
fn the_supervisor_has_no_field_visible_outside_it() {
    let text = std::fs::read_to_string(root().join("src/supervisor/mod.rs")).unwrap();
    let body = text.split("pub struct Supervisor {").nth(1).unwrap().split("\n}").next().unwrap();
    assert!(!body.contains("pub"), "a field of Supervisor is public:\n{body}");
}

/// The supervisor's state stays a few concerns, each with one owner: a
/// new piece of state joins the group of the concern it belongs to (or
/// makes one, in the file that owns it), not the top of the struct.
#[test]
fn the_supervisor_keeps_at_most_twenty_fields() {
    let text = std::fs::read_to_string(root().join("src/supervisor/mod.rs")).unwrap();
    let body = text.split("pub struct Supervisor {").nth(1).unwrap().split("\n}").next().unwrap();
    let fields: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#["))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name))
        .collect();
    assert!(!fields.is_empty(), "no field found in Supervisor: the layout test no longer reads it");
    assert!(
        fields.len() <= 20,
        "Supervisor has {} fields ({}): group the new state with its concern, in the file that owns it",
        fields.len(),
        fields.join(", ")
    );
}

#[test]
fn the_supervisors_core_names_no_process_socket_or_proc_api() {
    let mut files = Vec::new();
    rust_files(&root().join("src/supervisor/core"), &mut files);
    assert!(!files.is_empty(), "src/supervisor/core holds the supervisor's decisions");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // What the docs say of the shell is no use of it.
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        for api in ["nix::", "libc::", "std::process", "tokio::net", "std::fs", "/proc", "crate::sys", "crate::io"] {
            assert!(
                !code.contains(api),
                "{} is the supervisor's functional core: it must not name {api} (the shell does the I/O)",
                f.display()
            );
        }
    }
}
