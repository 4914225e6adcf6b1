//! The module map in `lib.rs`, enforced: every `crate::<module>` edge must be
//! on it, and the rules after it hold (who may name sled, warp, hyper,
//! tungstenite, tokio; which storage functions session and http call).
//! A plain text scan of `src/` (comments stripped): no new crates, and it
//! runs with the library's unit tests wherever the integration tests live.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// External crates and the modules that alone may name them.
const CRATE_OWNERS: [(&str, &[&str]); 10] = [
    ("sled", &["storage"]),
    ("warp", &["http"]),
    ("hyper", &["http"]),
    ("hyper_util", &["http"]),
    ("http_body_util", &["http"]),
    ("tungstenite", &["session", "http"]),
    ("tokio_tungstenite", &["session", "http"]),
    // `http` serves TLS through `tls::stream`; `tls` names it only in its tests (the client).
    ("tokio_rustls", &["tls", "cluster"]),
    ("chitchat", &["cluster"]),
    ("openraft", &["cluster"]),
];

/// Crates `protocol` (pure data) must not name.
const NOT_IN_PROTOCOL: [&str; 6] = [
    "tokio",
    "tokio_util",
    "futures_util",
    "governor",
    "prometheus",
    "std::net",
];

/// The storage functions `session` and `http` may call, by receiver name
/// (`…store.f(` on a `Store`, `…storage.f(` on a `StorageHandle`).
const STORE_FNS: [&str; 6] = [
    "fetch_history",
    "classify_id",
    "remember_member",
    "was_member",
    "mark_read",
    "room_list",
];
const STORAGE_FNS: [&str; 5] = ["ack", "health", "depth", "propose_read", "propose_member"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `module name → modules it may import`, parsed from the map in lib.rs.
fn map_edges(lib_rs: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut bullets: Vec<String> = Vec::new();
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            break;
        };
        if let Some(rest) = doc.strip_prefix(" - [`") {
            bullets.push(rest.to_owned());
        } else if let Some(more) = doc.strip_prefix("   ")
            && let Some(last) = bullets.last_mut()
        {
            last.push(' ');
            last.push_str(more.trim());
        } else if !bullets.is_empty() && doc.trim().is_empty() {
            // The bullets end at the first blank doc line after them.
            break;
        }
    }
    let mut map = BTreeMap::new();
    for b in bullets {
        let Some((name, rest)) = b.split_once("`]") else {
            continue;
        };
        let Some((_, allowed)) = rest.split_once("May import:") else {
            panic!("the map's bullet for `{name}` does not say what it may import");
        };
        let allowed = allowed.split('.').next().unwrap_or("");
        let names: BTreeSet<String> = allowed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert!(
            !names.is_empty() || allowed.trim() == "nothing",
            "`{name}`: say `May import: nothing.` rather than leave it empty"
        );
        map.insert(name.to_owned(), names);
    }
    map
}

/// Every `.rs` file under `dir`, recursively.
fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module a file belongs to: `src/hub/state.rs` → `hub`, `src/files.rs`
/// → `files`. `None` for the crate root and the binaries (they use the
/// library from outside, as `hubbub::…`).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    match name {
        "lib" | "main" | "bin" | "layering_tests" => None,
        _ => Some(name.to_owned()),
    }
}

/// The source without `//` comments (doc comments included), so prose may
/// name anything.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The modules named as `crate::m…`, including `crate::{a, b::…}`.
fn crate_edges(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(is_ident) {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each top-level item of the group.
            let mut depth = 0;
            let mut at_item_start = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !name.is_empty() {
                            out.insert(std::mem::take(&mut name));
                        }
                        at_item_start = true;
                    }
                    _ if depth == 0 && at_item_start && is_ident(c) => name.push(c),
                    _ if depth == 0 && at_item_start && !name.is_empty() => {
                        out.insert(std::mem::take(&mut name));
                        at_item_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            out.insert(name);
        }
    }
    out
}

/// Whether `code` names the external crate (or path) `name` as `name::…`.
fn names_path(code: &str, name: &str) -> bool {
    let needle = format!("{name}::");
    code.match_indices(&needle).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        // Not the tail of a longer path or name (`tokio_tungstenite::`
        // is not `tungstenite::`), except through `::` (a `use` group).
        !before.is_some_and(|c| is_ident(c) || c == ':')
    }) || code.contains(&format!("use {name};"))
}

/// `store.f(` / `storage.f(` calls (whitespace and line breaks allowed).
fn calls_on(code: &str, receiver: &str) -> BTreeSet<String> {
    let squeezed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let needle = format!("{receiver}.");
    let mut out = BTreeSet::new();
    for (i, _) in squeezed.match_indices(&needle) {
        if squeezed[..i].ends_with(is_ident) {
            continue;
        }
        let rest = &squeezed[i + needle.len()..];
        let f: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if rest[f.len()..].starts_with('(') {
            out.insert(f);
        }
    }
    out
}

/// Every breach of the map and its rules in the sources under `src`.
fn breaches(src: &Path) -> Vec<String> {
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let map = map_edges(&lib_rs);
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for path in files {
        let rel = path.strip_prefix(src).unwrap().to_owned();
        let Some(module) = module_of(&rel) else {
            continue;
        };
        seen.insert(module.clone());
        let Some(allowed) = map.get(&module) else {
            bad.push(format!(
                "{}: module `{module}` is not on the map in lib.rs",
                rel.display()
            ));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        for to in crate_edges(&code) {
            if to != module && !allowed.contains(&to) {
                bad.push(format!(
                    "{}: `{module}` imports `crate::{to}`, not on the map",
                    rel.display()
                ));
            }
        }
        for (name, owners) in CRATE_OWNERS {
            if names_path(&code, name) && !owners.contains(&module.as_str()) {
                bad.push(format!("{}: `{name}::` outside {owners:?}", rel.display()));
            }
        }
        if module == "protocol" {
            for name in NOT_IN_PROTOCOL {
                if names_path(&code, name) {
                    bad.push(format!("{}: `protocol` names `{name}`", rel.display()));
                }
            }
        }
        if module == "session" || module == "http" {
            for (receiver, fns) in [("store", &STORE_FNS[..]), ("storage", &STORAGE_FNS[..])] {
                for f in calls_on(&code, receiver) {
                    if !fns.contains(&f.as_str()) {
                        bad.push(format!(
                            "{}: `{module}` calls `{receiver}.{f}(`, not one of storage's named functions {fns:?}",
                            rel.display()
                        ));
                    }
                }
            }
        }
    }
    for m in map.keys() {
        if !seen.contains(m) {
            bad.push(format!("the map names `{m}`, which has no source file"));
        }
    }
    bad
}

#[test]
fn imports_follow_the_map_in_lib_rs() {
    let bad = breaches(&src_dir());
    assert!(bad.is_empty(), "layering breaches:\n{}", bad.join("\n"));
}

/// The "may import" table of docs/ARCHITECTURE.md, parsed like the map.
fn doc_edges(md: &str) -> BTreeMap<String, BTreeSet<String>> {
    let start = md
        .find("| module | may import |")
        .expect("docs/ARCHITECTURE.md has no `| module | may import |` table");
    let mut map = BTreeMap::new();
    for row in md[start..].lines().skip(2) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            break;
        }
        let ticked = |s: &str| -> BTreeSet<String> {
            s.split('`').skip(1).step_by(2).map(str::to_owned).collect()
        };
        for m in ticked(cells[1]) {
            map.insert(m, ticked(cells[2]));
        }
    }
    map
}

#[test]
fn architecture_md_shows_the_same_map() {
    let lib_rs = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let md_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md");
    let md = std::fs::read_to_string(md_path).unwrap();
    assert_eq!(
        doc_edges(&md),
        map_edges(&lib_rs),
        "docs/ARCHITECTURE.md's table and the map in lib.rs differ"
    );
}

#[test]
fn the_map_parses() {
    let lib_rs = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let map = map_edges(&lib_rs);
    assert!(map["protocol"].is_empty());
    assert_eq!(
        map["storage"],
        ["protocol", "error", "metrics"].map(String::from).into()
    );
    assert!(map["server"].contains("http"));
}

#[test]
fn the_scanner_sees_each_kind_of_breach() {
    let edges = crate_edges(
        "use crate::{hub::HubHandle, storage::{Store, Want}};\nuse crate::auth;\nuse crate::{tls, files};",
    );
    assert_eq!(
        edges,
        ["auth", "files", "hub", "storage", "tls"]
            .map(String::from)
            .into()
    );
    assert!(names_path("let db: sled::Db;", "sled"));
    assert!(names_path("use sled;", "sled"));
    assert!(!names_path(
        "use tokio_tungstenite::WebSocketStream;",
        "tungstenite"
    ));
    assert!(names_path(
        "use tokio_tungstenite::tungstenite::Message;",
        "tokio_tungstenite"
    ));
    assert!(!names_path("x.sled_thing::y", "sled"));
    assert!(
        code_of("/// uses sled::Db\nfn f() {}")
            .find("sled")
            .is_none()
    );
    let calls = calls_on(
        "ctx\n    .store\n    .page(&room)\n; self.store.fetch_history(q)",
        "store",
    );
    assert_eq!(calls, ["fetch_history", "page"].map(String::from).into());
}
