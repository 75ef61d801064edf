//! The source layout keeps data flowing one way: no module of the library
//! imports, directly or through others, a module that imports it back.
//!
//! Reads `src/` as text: every `crate::…` and `super::…` path outside
//! comments is an edge from the file it appears in to the file that
//! defines the module it names (a name re-exported by a folder's `mod.rs`
//! with `pub use sub::…` counts as `sub`). Then no cycle may exist among
//! the files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → `[a, b]`, `src/a/mod.rs` and `src/a.rs` → `[a]`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// Code without `//` comments (doc comments included).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `a::b::c` path segments after each `crate::` or `super::`, with the
/// prefix: `(true, [a, b, c])` for crate, `(false, …)` for super. Group
/// imports (`crate::x::{y, z}`) give their common prefix.
fn paths(code: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    for (prefix, is_crate) in [("crate::", true), ("super::", false)] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut segs = Vec::new();
            let mut s = rest;
            loop {
                let n = s
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(s.len());
                if n == 0 {
                    break;
                }
                segs.push(s[..n].to_string());
                s = &s[n..];
                match s.strip_prefix("::") {
                    Some(r) => s = r,
                    None => break,
                }
            }
            // A group (`x::{a, b::c}`) names each of its items.
            if let Some(group) = s.strip_prefix('{') {
                let mut depth = 0;
                let end = group
                    .char_indices()
                    .find(|&(_, c)| {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => return true,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        false
                    })
                    .map_or(group.len(), |(i, _)| i);
                let mut item = String::new();
                let mut d = 0;
                let mut items = Vec::new();
                for c in group[..end].chars() {
                    match c {
                        '{' => d += 1,
                        '}' => d -= 1,
                        ',' if d == 0 => {
                            items.push(std::mem::take(&mut item));
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                items.push(item);
                for it in items {
                    let mut full = segs.clone();
                    full.extend(
                        it.trim()
                            .split("::")
                            .map(|p| p.trim())
                            .take_while(|p| {
                                !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                            })
                            .map(str::to_string),
                    );
                    out.push((is_crate, full));
                }
                continue;
            }
            out.push((is_crate, segs));
        }
    }
    out
}

/// What a folder's `mod.rs` re-exports: name → submodule.
fn reexports(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = code(text);
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let Some((sub, names)) = rest.split_once("::") else {
            continue;
        };
        if sub == "crate" || sub == "super" {
            continue;
        }
        let names = names.trim().trim_start_matches('{').trim_end_matches('}');
        for n in names.split(',') {
            let n = n.trim().rsplit("::").next().unwrap_or("").trim();
            if !n.is_empty() {
                map.insert(n.to_string(), sub.to_string());
            }
        }
    }
    map
}

/// A cycle in `edges`, if any: depth-first search with the current path
/// on a stack; meeting a node on the stack again closes a cycle.
fn find_cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        n: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for next in edges.get(n).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let start = stack.iter().position(|s| s == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n)
            && let Some(cycle) = visit(n, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_library_has_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .filter(|(m, _)| m != &["lib".to_string()] && m != &["main".to_string()])
        .collect();
    let reexported: BTreeMap<Module, BTreeMap<String, String>> = modules
        .iter()
        .map(|(m, f)| (m.clone(), reexports(&std::fs::read_to_string(f).unwrap())))
        .collect();
    // The module a path names: its longest prefix that is a module file,
    // then one step into a re-export of that module if there is one.
    let resolve = |mut segs: Vec<String>| -> Option<Module> {
        while !segs.is_empty() && !modules.contains_key(&segs) {
            segs.pop();
        }
        if segs.is_empty() {
            return None;
        }
        Some(segs)
    };
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, f) in &modules {
        let text = code(&std::fs::read_to_string(f).unwrap());
        for (is_crate, segs) in paths(&text) {
            let full: Vec<String> = if is_crate {
                segs.clone()
            } else {
                // `super` of a file's module is its parent; of an inline
                // `mod tests` it is the file itself, which is not an edge.
                let mut base = m.clone();
                base.pop();
                base.into_iter().chain(segs.clone()).collect()
            };
            let Some(target) = resolve(full.clone()) else {
                continue;
            };
            let target = match full.get(target.len()) {
                Some(name) => match reexported.get(&target).and_then(|r| r.get(name)) {
                    Some(sub) => {
                        let mut t = target.clone();
                        t.push(sub.clone());
                        t
                    }
                    None => target,
                },
                None => target,
            };
            let (from, to) = (m.clone(), target);
            if from != to && !to.starts_with(&from) {
                edges.entry(from).or_default().insert(to);
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let shown: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
        panic!("import cycle: {}", shown.join(" -> "));
    }
    // The check sees the tree: the TLS folder's files are separate nodes.
    assert!(
        edges.keys().any(|m| m.len() == 2 && m[0] == "tls"),
        "no edges from tls/ files: {edges:?}"
    );
}

#[test]
fn the_cycle_check_reads_paths_and_finds_cycles() {
    let m = |s: &str| s.split("::").map(str::to_string).collect::<Module>();
    let a = paths("use crate::b::X; fn f() { super::c::g(); } // crate::nope");
    assert_eq!(
        a,
        vec![(true, m("b::X")), (true, m("nope")), (false, m("c::g")),]
    );
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    edges.entry(m("a")).or_default().insert(m("b::c"));
    edges.entry(m("b::c")).or_default().insert(m("d"));
    assert_eq!(find_cycle(&edges), None);
    edges.entry(m("d")).or_default().insert(m("a"));
    assert_eq!(
        find_cycle(&edges),
        Some(vec![m("a"), m("b::c"), m("d"), m("a")])
    );
    assert_eq!(paths(&code("// crate::x\nlet y = 1;")), Vec::new());
    assert_eq!(
        paths("use super::{a, b::{C, D}, self};"),
        vec![(false, m("a")), (false, m("b")), (false, m("self"))]
    );
    let r = reexports("pub use state::{CertSummary, ListenerTls};\npub use crate::dn::x;");
    assert_eq!(r.get("ListenerTls").map(String::as_str), Some("state"));
    assert!(!r.contains_key("x"));
}
