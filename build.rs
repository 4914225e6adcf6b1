//! Embeds every file of web/ into the binary, so an installed hubbub serves
//! its UI without a checkout (`--web-dir` serves from disk instead, for development).

use std::fmt::Write;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    println!("cargo:rerun-if-changed=web");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
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
