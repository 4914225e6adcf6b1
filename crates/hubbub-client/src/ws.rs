//! WebSocket sessions: the upgrade (with the server's refusal status), typed
//! frames out, JSON frames and the close code in.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use hubbub::protocol::{ClientMsg, RoomName};
use serde_json::Value;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::frames;
use crate::http::{Account, Endpoint, Io};

/// A WebSocket session.
pub struct WsClient {
    pub ws: WebSocketStream<Box<dyn Io>>,
    /// `batch=1`: the lines of a text frame not yet returned by `recv`.
    pending: VecDeque<Value>,
}

/// Why an upgrade did not happen: the HTTP status (401, 403, …), a redirect
/// not followed, or a transport error.
#[derive(Debug)]
pub enum ConnectError {
    Status(u16, Option<String>),
    /// A 307 (cluster mode: the user's home is another node): its `Location`.
    Redirect(String),
    Other(anyhow::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Status(s, _) => write!(f, "upgrade refused with {s}"),
            ConnectError::Redirect(to) => write!(f, "redirected to {to}"),
            ConnectError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Redirects [`connect`] follows. A cluster redirects a client at most once
/// (its loop shield); more than this is a loop.
pub const MAX_REDIRECTS: usize = 3;

/// Opens `/ws?{query}` with the given extra headers (cookie, origin, …),
/// following a cluster's 307 to the user's home node, `Location` as given.
pub async fn connect(
    ep: impl Into<Endpoint>,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, ConnectError> {
    let mut ep = ep.into();
    let mut target = format!("/ws{}{query}", if query.is_empty() { "" } else { "?" });
    for _ in 0..MAX_REDIRECTS {
        match upgrade(&ep, &target, headers).await {
            Err(ConnectError::Redirect(to)) => {
                (ep, target) = follow(&ep, &to).await.map_err(ConnectError::Other)?;
            }
            done => return done,
        }
    }
    upgrade(&ep, &target, headers).await
}

/// One upgrade of `target` (path and query) at `ep`; a 307 is not followed.
pub async fn upgrade(
    ep: &Endpoint,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, ConnectError> {
    let addr = ep.addr;
    let url = format!(
        "{}://{addr}{target}",
        if ep.is_tls() { "wss" } else { "ws" }
    );
    let mut req = url
        .into_client_request()
        .map_err(|e| ConnectError::Other(e.into()))?;
    for (k, v) in headers {
        let v = HeaderValue::from_str(v).map_err(|e| ConnectError::Other(e.into()))?;
        let k = tungstenite::http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| ConnectError::Other(e.into()))?;
        req.headers_mut().insert(k, v);
    }
    let tcp = ep.connect().await.map_err(ConnectError::Other)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(64 << 20));
    match tokio_tungstenite::client_async_with_config(req, tcp, Some(config)).await {
        Ok((ws, _)) => Ok(WsClient::new(ws)),
        Err(tungstenite::Error::Http(resp)) => {
            let location = resp
                .headers()
                .get(tungstenite::http::header::LOCATION)
                .and_then(|v| v.to_str().ok());
            if let (307, Some(to)) = (resp.status().as_u16(), location) {
                return Err(ConnectError::Redirect(to.to_owned()));
            }
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned());
            Err(ConnectError::Status(resp.status().as_u16(), body))
        }
        Err(e) => Err(ConnectError::Other(e.into())),
    }
}

/// Where a `Location` (`wss://host:port/ws?…`) points: the same endpoint's
/// TLS settings at that address, and the path with its query.
async fn follow(ep: &Endpoint, location: &str) -> anyhow::Result<(Endpoint, String)> {
    let (scheme, rest) = location
        .split_once("://")
        .with_context(|| format!("a relative Location: {location}"))?;
    if (scheme == "wss") != ep.is_tls() || !matches!(scheme, "ws" | "wss") {
        bail!("a Location of another scheme: {location}");
    }
    let (authority, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("no address for {authority}"))?;
    let target = if target.is_empty() { "/" } else { target };
    Ok((ep.at(addr), target.to_owned()))
}

/// Connects as `account` to `room` with optional client id and `since`.
pub async fn join(
    ep: impl Into<Endpoint>,
    account: &Account,
    room: &str,
    client: Option<&str>,
    since: Option<&str>,
) -> anyhow::Result<WsClient> {
    join_with(ep, account, join_query(room, client, since)).await
}

/// A multi-room connection (`multi=1`) as `account`, with an optional client
/// id: its `welcome` names no room; [`WsClient::subscribe`] joins rooms.
pub async fn join_multi(
    ep: impl Into<Endpoint>,
    account: &Account,
    client: Option<&str>,
) -> anyhow::Result<WsClient> {
    let mut q = String::from("multi=1");
    if let Some(c) = client {
        q.push_str(&format!("&client={c}"));
    }
    join_with(ep, account, q).await
}

/// `room=…` with the optional `client` and `since`.
fn join_query(room: &str, client: Option<&str>, since: Option<&str>) -> String {
    let mut q = format!("room={room}");
    if let Some(c) = client {
        q.push_str(&format!("&client={c}"));
    }
    if let Some(s) = since {
        q.push_str(&format!("&since={s}"));
    }
    q
}

async fn join_with(
    ep: impl Into<Endpoint>,
    account: &Account,
    q: String,
) -> anyhow::Result<WsClient> {
    let cookie = account.cookie_header();
    connect(ep, &q, &[("cookie", &cookie)])
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// Cluster mode: the caller's home node as the node at `ep` sees it
/// (`GET /api/cluster/route`): its name and its socket URL; `None` from a
/// node not in a cluster (404).
pub async fn route(
    ep: impl Into<Endpoint>,
    account: &Account,
) -> anyhow::Result<Option<(String, String)>> {
    let cookie = account.cookie_header();
    let r = crate::http::request(
        ep,
        "GET",
        "/api/cluster/route",
        &[("cookie", &cookie)],
        None,
    )
    .await?;
    match r.status {
        200 => {}
        404 => return Ok(None),
        s => bail!("/api/cluster/route answered {s}: {}", r.body),
    }
    let v = r.json();
    match (v["node"].as_str(), v["url"].as_str()) {
        (Some(n), Some(u)) => Ok(Some((n.to_owned(), u.to_owned()))),
        _ => bail!("/api/cluster/route answered {}", r.body),
    }
}

/// Joins at `ep` itself even when the user's home is another node: `from=`
/// names the home that node's ring chose, which its loop shield accepts.
/// For tools and tests that place sessions on purpose (any node serves any
/// user); clients should use [`join`] and go home.
pub async fn join_here(
    ep: impl Into<Endpoint>,
    account: &Account,
    room: &str,
    client: Option<&str>,
    since: Option<&str>,
) -> anyhow::Result<WsClient> {
    let ep = ep.into();
    let (home, _) = route(&ep, account)
        .await?
        .ok_or_else(|| anyhow!("/api/cluster/route answered 404: not a cluster"))?;
    let q = format!("{}&from={home}", join_query(room, client, since));
    join_with(ep, account, q).await
}

/// What `WsClient::recv` returns: a JSON frame or how the connection ended.
#[derive(Debug)]
pub enum Incoming {
    Frame(Value),
    Closed(Option<u16>),
}

impl WsClient {
    /// A session over an already upgraded stream.
    pub fn new(ws: WebSocketStream<Box<dyn Io>>) -> Self {
        WsClient {
            ws,
            pending: VecDeque::new(),
        }
    }

    /// Sends a frame of the protocol, serialized as the server parses it.
    pub async fn send(&mut self, msg: &ClientMsg) -> anyhow::Result<()> {
        self.send_text(frames::encode(msg)).await
    }

    /// Multi-room connections: joins `room` (resuming after `since`); the
    /// server answers `subscribed` and the room's `history`.
    pub async fn subscribe(&mut self, room: &str, since: Option<&str>) -> anyhow::Result<()> {
        let room = RoomName::parse(room).with_context(|| format!("invalid room {room:?}"))?;
        let since = since.map(str::to_owned);
        self.send(&ClientMsg::Subscribe { room, since }).await
    }

    /// Multi-room connections: leaves `room`; the server answers `unsubscribed`.
    pub async fn unsubscribe(&mut self, room: &str) -> anyhow::Result<()> {
        let room = RoomName::parse(room).with_context(|| format!("invalid room {room:?}"))?;
        self.send(&ClientMsg::Unsubscribe { room }).await
    }

    /// Moves the read position in `room` forward to `cursor` (a cursor
    /// string as the server sent it). The server answers every connection
    /// of the user with a `read` frame, or says nothing when it did not move.
    /// `room`: `None` on a single-room connection (its room), required on a
    /// multi-room one.
    pub async fn read(&mut self, room: Option<&str>, cursor: &str) -> anyhow::Result<()> {
        let cursor = hubbub::protocol::Cursor::parse(cursor)
            .with_context(|| format!("invalid cursor {cursor:?}"))?;
        let msg = ClientMsg::Read { cursor };
        match room {
            Some(room) => self.send_in(&msg, room).await,
            None => self.send(&msg).await,
        }
    }

    /// Multi-room connections: sends `msg` naming `room`.
    pub async fn send_in(&mut self, msg: &ClientMsg, room: &str) -> anyhow::Result<()> {
        self.send_text(frames::encode_in(msg, room)).await
    }

    /// Sends any JSON value as a text frame (for frames the protocol does not
    /// allow: the tests of the server's answers to them).
    pub async fn send_json(&mut self, v: &Value) -> anyhow::Result<()> {
        self.send_text(v.to_string()).await
    }

    pub async fn send_text(&mut self, s: String) -> anyhow::Result<()> {
        self.ws.send(Message::Text(s.into())).await.context("send")
    }

    pub async fn send_raw(&mut self, m: Message) -> anyhow::Result<()> {
        self.ws.send(m).await.context("send")
    }

    /// The next JSON frame or close, skipping pings; `None` after `timeout`.
    /// A text frame of several lines (`batch=1`: one JSON object per line)
    /// yields them one by one, in order.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Incoming> {
        if let Some(v) = self.pending.pop_front() {
            return Some(Incoming::Frame(v));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match m {
                None => return Some(Incoming::Closed(None)),
                Some(Err(_)) => return Some(Incoming::Closed(None)),
                Some(Ok(Message::Text(t))) => {
                    // Our JSON never holds a raw newline, so a frame without
                    // `batch=1` is one line and splitting changes nothing.
                    self.pending.extend(
                        t.as_str()
                            .split('\n')
                            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null)),
                    );
                    if let Some(v) = self.pending.pop_front() {
                        return Some(Incoming::Frame(v));
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    return Some(Incoming::Closed(f.map(|f| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next frame whose `type` is `ty`, skipping others; errors on close or timeout.
    pub async fn expect(&mut self, ty: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(Incoming::Frame(v)) if v["type"] == ty => return Ok(v),
                Some(Incoming::Frame(_)) => continue,
                Some(Incoming::Closed(c)) => bail!("closed ({c:?}) while waiting for {ty}"),
                None => bail!("timed out waiting for {ty}"),
            }
        }
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn expect_close(&mut self, timeout: Duration) -> anyhow::Result<Option<u16>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(Incoming::Frame(_)) => continue,
                Some(Incoming::Closed(c)) => return Ok(c),
                None => bail!("timed out waiting for close"),
            }
        }
    }
}
