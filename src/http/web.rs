//! The web UI's files: embedded in the binary (the default), or read from
//! `--web-dir` for development. Only the files of web/ exist: no path is
//! ever joined onto the file system from a request in embedded mode.

use warp::http::{HeaderValue, StatusCode, header};
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_index_and_nothing_outside() {
        assert!(embedded("/").is_some());
        assert!(embedded("/index.html").is_some());
        assert!(embedded("/../Cargo.toml").is_none());
        assert!(embedded("/nope.js").is_none());
    }
}
