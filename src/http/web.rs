//! The web UI's files: embedded in the binary (the default), or read from
//! `--web-dir` for development. Only the files of web/ exist: no path is
//! ever joined onto the file system from a request in embedded mode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::path::Peek;
use warp::reply::{Reply, Response};

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

fn mime(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The embedded file for a request path (`/` is `index.html`), if any.
pub fn embedded(path: &str) -> Option<Response> {
    let name = match path.trim_start_matches('/') {
        "" => "index.html",
        n => n,
    };
    let (name, body) = ASSETS.iter().find(|(n, _)| *n == name)?;
    let mut r = warp::http::Response::new(*body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime(name)));
    *r.status_mut() = StatusCode::OK;
    Some(r)
}

/// `--web-dir`: warp's file server, behind a check that the request names a
/// file inside the directory. Hidden names (any path segment starting with
/// `.`: `.git`, `.env`) are never served, and a path whose real location
/// (symlinks resolved) is outside the directory is 404, like a missing file.
/// A symlink swapped in between check and read is not caught: whoever can do
/// that can write the directory being served anyway.
pub fn from_dir(root: PathBuf) -> BoxedFilter<(Response,)> {
    let real_root = Arc::new(std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone()));
    // `peek`, not `tail`: the path stays for warp's file server to read.
    let inside = warp::path::peek()
        .and_then(move |tail: Peek| {
            let real_root = real_root.clone();
            async move {
                if servable(&real_root, tail.as_str()).await {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one();
    inside
        .and(warp::fs::dir(root))
        .map(Reply::into_response)
        .boxed()
}

/// Whether the request path `tail` (percent-encoded, as warp's file server
/// decodes it) is a visible file inside `real_root` (already canonical).
async fn servable(real_root: &Path, tail: &str) -> bool {
    let Some(rel) = percent_decode(tail) else {
        return false;
    };
    if rel.split(['/', '\\']).any(|seg| seg.starts_with('.')) {
        return false;
    }
    let mut path = real_root.join(rel.trim_start_matches('/'));
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
        path.push("index.html");
    }
    tokio::fs::canonicalize(&path)
        .await
        .is_ok_and(|real| real.starts_with(real_root))
}

/// `%XX` decoding to UTF-8; `None` for a broken escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_index_and_nothing_outside() {
        assert!(embedded("/").is_some());
        assert!(embedded("/index.html").is_some());
        assert!(embedded("/../Cargo.toml").is_none());
        assert!(embedded("/nope.js").is_none());
        // web/js/ is embedded too (build.rs walks subdirectories), as JavaScript.
        let js = embedded("/js/app.js").expect("the entry module is embedded");
        assert_eq!(
            js.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/javascript; charset=utf-8"
        );
        assert!(embedded("/js/protocol.js").is_some());
        assert!(embedded("/js/../index.html").is_none());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Eb%20c").as_deref(), Some("a.b c"));
        assert_eq!(percent_decode("%2e%2e/x").as_deref(), Some("../x"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
