//! The one-way layering of `podnet-probe`, checked on every `cargo test` (no root needed).
//!
//! Every top-level module of `src/` has a rank in [`LAYERS`]; a module's non-test code may
//! refer (`crate::…`, in code, `use` or attributes) only to itself and to modules of a strictly
//! lower rank. So no module imports one above it, and no cycle can form. A new top-level
//! module must be added to the table, which is the moment to decide where it belongs.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Module → rank. Sources (host, kube, probe) → state (pods) → verdict (pure) → snapshot →
/// orchestration (monitor) → exporters (metrics). `model` is the shared vocabulary, `util`
/// and `error` the leaves under it.
const LAYERS: &[(&str, u32)] = &[
    ("util", 0),
    ("error", 0),
    ("model", 1),
    ("cni", 2),
    ("felix", 2),
    ("host", 2),
    ("kube", 2),
    ("probe", 3),
    ("pods", 4),
    // A source (control-plane Services, probed from the host) that classifies its connects
    // with `probe::outcome`, so it sits just above `probe`.
    ("controlplane", 4),
    ("verdict", 5),
    ("snapshot", 6),
    ("monitor", 7),
    ("metrics", 8),
    ("report", 8),
    // Exporter: the node condition and Events, decided from the snapshot.
    ("notify", 8),
    // Test-only builders of host objects (`#[cfg(test)]` in lib.rs); no product code sees it.
    ("fixtures", 9),
];

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// Test code (unit-test files and `#[cfg(test)] mod … { … }` blocks) may use any layer.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs")
}

/// Drop `//` comments (doc links are not dependencies) and `#[cfg(test)]` modules with a body.
fn strip(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            // Keep `//` inside a string literal such as a URL: only cut when no quote precedes.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::with_capacity(no_comments.len());
    let mut rest = no_comments.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let decl_end = after.find([';', '{']).unwrap_or(after.len());
        let is_mod_block = after[..decl_end].contains("mod ") && after[decl_end..].starts_with('{');
        if !is_mod_block {
            out.push_str(&after[..decl_end.min(after.len())]);
            rest = &after[decl_end..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (j, c) in after[decl_end..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = decl_end + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules referred to as `crate::name` or inside `crate::{a, b::c, …}`.
fn references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        if preceded_by_ident {
            continue; // e.g. `podnet_crate::`, not ours
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those at brace depth 0 after `{` or `,`.
            let mut depth = 0usize;
            let mut expect_name = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    c if c.is_whitespace() => {}
                    _ if expect_name && depth == 0 => {
                        let name = ident_at(&group[j..]);
                        if !name.is_empty() {
                            out.insert(name.to_owned());
                        }
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") && !is_test_file(path) {
        out.push(path.to_owned());
    }
}

/// Every edge that breaks the table: (from, to, file).
fn violations(src: &Path) -> (Vec<String>, Vec<String>) {
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    // A module is a top-level `name.rs`, a folder `name/`, or both.
    let names: BTreeSet<String> = fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .filter(|name| name != "lib")
        .collect();
    for module in &names {
        let Some(from) = rank(module) else {
            unknown.push(module.clone());
            continue;
        };
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        rust_files(&src.join(format!("{module}.rs")), &mut files);
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            for to in references(&strip(&text)) {
                if to == *module || !names.contains(&to) {
                    continue;
                }
                let ok = rank(&to).is_some_and(|r| r < from);
                if !ok {
                    bad.push(format!(
                        "{module} (rank {from}) -> {to} (rank {:?}) in {}",
                        rank(&to),
                        f.strip_prefix(src).unwrap_or(&f).display()
                    ));
                }
            }
        }
    }
    bad.sort();
    bad.dedup();
    (bad, unknown)
}

#[test]
fn imports_only_go_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (bad, unknown) = violations(&src);
    assert!(
        unknown.is_empty(),
        "top-level modules missing from LAYERS in tests/layering.rs: {unknown:?}"
    );
    assert!(
        bad.is_empty(),
        "imports that go up or sideways (see LAYERS in tests/layering.rs):\n  {}",
        bad.join("\n  ")
    );
}

/// The checker itself can fail: each of these is an edge it must see.
#[test]
fn checker_sees_every_form_of_reference() {
    let code = "use crate::monitor::X;\n\
                use crate::{metrics::Metrics, snapshot::{Snapshot, A}};\n\
                #[serde(serialize_with = \"crate::util::clock::f\")]\n\
                fn f() { crate::kube::client(); }\n\
                // crate::verdict in a comment is no dependency\n\
                #[cfg(test)]\nmod tests { use crate::pods::X; }\n";
    let refs = references(&strip(code));
    let want: BTreeSet<String> = ["kube", "metrics", "monitor", "snapshot", "util"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(refs, want);
    // Nested groups only name their top level.
    let nested = references("use crate::{\n    host::{A, B},\n    model::{C, d::E},\n};");
    assert_eq!(
        nested,
        ["host", "model"].iter().map(|s| (*s).to_owned()).collect()
    );
    assert!(rank("metrics") > rank("model"));
}
