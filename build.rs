//! Embeds every file of web/ (subdirectories included, e.g. web/js/) into the
//! binary, so an installed hubbub serves its UI without a checkout
//! (`--web-dir` serves from disk instead, for development). Names are the
//! paths relative to web/ with `/` separators; hidden names (a segment that
//! starts with `.`) are skipped, like the `--web-dir` server skips them.

use std::fmt::Write;
use std::path::Path;

/// Relative names of the visible files under `dir`, recursively.
fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                println!("cargo:rerun-if-changed=web/{rel}");
                collect(&e.path(), &format!("{rel}/"), out);
            }
            Ok(t) if t.is_file() => out.push(rel),
            _ => {}
        }
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    println!("cargo:rerun-if-changed=web");
    let mut names = Vec::new();
    collect(&dir, "", &mut names);
    names.sort();
    let mut out = String::from(
        "/// Files of web/, embedded at build time: (name, bytes).\npub const ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for n in &names {
        println!("cargo:rerun-if-changed=web/{n}");
        let _ = writeln!(
            out,
            "    ({n:?}, include_bytes!({:?})),",
            dir.join(n).display().to_string()
        );
    }
    out.push_str("];\n");
    let dest =
        Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("web_assets.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        println!("cargo:warning=could not write {}: {e}", dest.display());
    }
}
