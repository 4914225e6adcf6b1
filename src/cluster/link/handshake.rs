//! One handshake, either side: TCP, TLS 1.3, hellos with proofs, verdicts.
//! The caller bounds the whole of it by the handshake timeout, so a client
//! that stalls anywhere (before TLS, inside it, in the hello) is dropped.

use std::net::SocketAddr;

use ring::hmac;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::HandshakeError;
use super::hello::{self, EXPORTER_LABEL, EXPORTER_LEN, Role, Verdict};
use super::tls;

/// This node's side of a handshake.
pub struct Local<'a> {
    pub node_id: &'a str,
    pub key: &'a hmac::Key,
}

/// Dials `addr` and proves the secret. `expected`: the node id the dialer
/// means to reach (a node that answers with another id is refused).
pub async fn dial(
    me: &Local<'_>,
    connector: &TlsConnector,
    addr: SocketAddr,
    role: Role,
    expected: Option<&str>,
) -> Result<(TlsStream<TcpStream>, String), HandshakeError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(HandshakeError::Connect)?;
    // Small frames (votes, pings) should not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let tls = connector
        .connect(tls::server_name(addr), tcp)
        .await
        .map_err(HandshakeError::Tls)?;
    let exporter = tls
        .get_ref()
        .1
        .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
        .map_err(|e| HandshakeError::Setup(e.to_string()))?;
    let mut stream = TlsStream::Client(tls);
    let peer = exchange(me, &mut stream, role, &exporter, |p| match expected {
        Some(want) if p.node_id != want => Verdict::Peer,
        _ if p.role != Role::Acceptor || p.node_id == me.node_id => Verdict::Peer,
        _ => Verdict::Accept,
    })
    .await?;
    Ok((stream, peer))
}

/// Accepts one connection. `decide` says whether the proven peer (its id
/// and role) may have a link with this node.
pub async fn accept(
    me: &Local<'_>,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    decide: impl FnOnce(&hello::PeerHello) -> Verdict,
) -> Result<(TlsStream<TcpStream>, hello::PeerHello), HandshakeError> {
    let _ = tcp.set_nodelay(true);
    let tls = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
    let exporter = tls
        .get_ref()
        .1
        .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
        .map_err(|e| HandshakeError::Setup(e.to_string()))?;
    let mut stream = TlsStream::Server(tls);
    let mut role = None;
    let id = exchange(me, &mut stream, Role::Acceptor, &exporter, |p| {
        role = Some(p.role);
        if p.role == Role::Acceptor {
            return Verdict::Peer;
        }
        decide(p)
    })
    .await?;
    let role = role.ok_or(HandshakeError::Hello)?;
    Ok((stream, hello::PeerHello { node_id: id, role }))
}

/// Both hellos, then both verdicts. Returns the proven peer's id.
async fn exchange(
    me: &Local<'_>,
    s: &mut TlsStream<TcpStream>,
    role: Role,
    exporter: &[u8],
    decide: impl FnOnce(&hello::PeerHello) -> Verdict,
) -> Result<String, HandshakeError> {
    let ours = hello::encode(me.key, role, me.node_id, exporter)
        .ok_or_else(|| HandshakeError::Setup("node id longer than 255 bytes".into()))?;
    s.write_all(&ours).await.map_err(HandshakeError::Io)?;
    s.flush().await.map_err(HandshakeError::Io)?;
    let peer = match hello::read(s, me.key, exporter).await {
        Ok(p) => p,
        Err(e) => {
            // Tell the other end why, best effort: it may be gone already.
            let code = match e {
                HandshakeError::Proof => Verdict::Proof,
                _ => Verdict::BadHello,
            };
            let _ = s.write_all(&[code as u8]).await;
            let _ = s.flush().await;
            return Err(e);
        }
    };
    match decide(&peer) {
        Verdict::Accept => {}
        refused => {
            let _ = hello::exchange_verdicts(s, refused).await;
            return Err(HandshakeError::Peer(peer.node_id));
        }
    }
    hello::exchange_verdicts(s, Verdict::Accept).await?;
    Ok(peer.node_id)
}
