//! HTTP: requests with a user's cookies, raw bytes on a socket, error bodies
//! that must not leak internals, cookies, JWT pieces and `/metrics` samples.

use std::net::SocketAddr;

use hubbub_client::{self as client, Account, ConnectError, Endpoint, HttpResponse, WsClient};
use serde_json::Value;

use super::server::{T, TestServer};

/// An HTTP request with `acct`'s cookies (when given).
pub async fn http(
    s: &TestServer,
    method: &str,
    path: &str,
    acct: Option<&Account>,
    body: Option<&str>,
) -> HttpResponse {
    let cookie = acct.map(Account::cookie_header);
    let headers: Vec<(&str, &str)> = match &cookie {
        Some(c) => vec![("cookie", c.as_str())],
        None => vec![],
    };
    client::request(s.addr, method, path, &headers, body)
        .await
        .unwrap()
}

/// `GET /api/rooms/{room}/messages?{query}` as `acct`.
pub async fn http_history(s: &TestServer, acct: &Account, room: &str, query: &str) -> HttpResponse {
    let path = if query.is_empty() {
        format!("/api/rooms/{room}/messages")
    } else {
        format!("/api/rooms/{room}/messages?{query}")
    };
    http(s, "GET", &path, Some(acct), None).await
}

/// An HTTP error body: `{"error":{"code","message"}}` with a non-empty message; returns the code.
pub fn error_code(r: &HttpResponse) -> String {
    let v = r.json();
    let msg = v["error"]["message"].as_str();
    assert!(
        msg.is_some_and(|m| !m.is_empty()),
        "error body without a message: {} {}",
        r.status,
        r.body
    );
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error body without a code: {} {}", r.status, r.body))
        .to_owned()
}

/// Markers of internal detail that must never reach a client.
pub const LEAKS: &[&str] = &[
    "sled",
    "panicked",
    "Error {",
    "Error(",
    "src/",
    ".rs:",
    "/tmp/",
    "/work/",
    "/home/",
    "backtrace",
    "thread '",
    "::",
];

/// Panics when `text` (a response body or error frame) carries internal detail.
pub fn assert_no_leak(what: &str, text: &str) {
    for l in LEAKS {
        assert!(
            !text.contains(l),
            "{what}: response leaks internal detail {l:?}: {text}"
        );
    }
}

/// The HTTP status of an upgrade attempt: 101 when it succeeded.
/// Refusals must carry a JSON error body.
pub fn upgrade_status(r: Result<WsClient, ConnectError>) -> u16 {
    match r {
        Ok(_) => 101,
        Err(ConnectError::Status(code, body)) => {
            let body = body.unwrap_or_default();
            assert_no_leak("upgrade refusal", &body);
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert!(
                v["error"]["code"].is_string(),
                "{code} without a JSON error body: {body:?}"
            );
            code
        }
        Err(e) => panic!("upgrade failed below HTTP: {e}"),
    }
}

/// Sends raw bytes over plain TCP and reads until the server closes (or 5 s pass).
pub async fn raw_http(addr: SocketAddr, req: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// A raw `GET path` (sent exactly as given, no normalisation): status and body.
pub async fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let resp = raw_http(addr, req.as_bytes()).await;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status for {path}: {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (as in JWTs).
pub fn b64url(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes base64url without padding.
pub fn b64url_decode(s: &str) -> Vec<u8> {
    let vals: Vec<u32> = s
        .bytes()
        .map(|c| B64.iter().position(|&b| b == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let mut n = 0u32;
        for (i, v) in chunk.iter().enumerate() {
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The attributes of the `Set-Cookie` for `name`, without Max-Age/Expires, sorted.
pub fn cookie_attrs(r: &HttpResponse, name: &str) -> Vec<String> {
    let c = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", r.set_cookies()));
    let mut attrs: Vec<String> = c
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .filter(|a| {
            let l = a.to_ascii_lowercase();
            !l.starts_with("max-age") && !l.starts_with("expires")
        })
        .collect();
    attrs.sort();
    attrs
}

/// One sample of `/metrics` at `ep`: the value on the line that starts with
/// `series` (exact name and labels as exposed) and a space; `None` when no
/// such line exists. The scrape itself must answer 200.
pub async fn metric_sample(ep: impl Into<Endpoint>, series: &str) -> Option<f64> {
    let r = client::request(ep, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series} = {v:?}: {e}"))
        })
}

/// `/ws?room={room}{extra}` with a 4 KiB receive buffer: the kernel cannot
/// soak up a flood for a session that stops reading, so the server's
/// writer soon blocks on it (eviction, batching of a backlog).
pub async fn connect_small_buffer(
    s: &TestServer,
    acct: &Account,
    room: &str,
    extra: &str,
) -> WsClient {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = format!("ws://{}/ws?room={room}{extra}", s.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "cookie",
        HeaderValue::from_str(&acct.cookie_header()).unwrap(),
    );
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(s.addr).await.unwrap();
    let io: Box<dyn hubbub_client::Io> = Box::new(tcp);
    let (ws, _) = tokio_tungstenite::client_async(req, io).await.unwrap();
    WsClient::new(ws)
}
