//! The unbuffered TLS stream against tokio-rustls' client, over real loopback
//! sockets.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream as ClientStream;

use super::{TlsStream, accept};

/// Bounds every wait of these tests; never reached when they pass.
const LIMIT: Duration = Duration::from_secs(20);

fn configs(versions: &[&'static SupportedProtocolVersion]) -> (Arc<ServerConfig>, TlsConnector) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(server), TlsConnector::from(Arc::new(client)))
}

/// A connected loopback pair: (server side, client side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, _) = l.accept().await.unwrap();
    (server, client)
}

async fn pair_with(
    versions: &[&'static SupportedProtocolVersion],
) -> (TlsStream, ClientStream<TcpStream>) {
    let (config, connector) = configs(versions);
    let (s, c) = tcp_pair().await;
    let name = ServerName::try_from("localhost").unwrap();
    let (server, client) = tokio::time::timeout(LIMIT, async {
        tokio::join!(accept(s, config), connector.connect(name, c))
    })
    .await
    .unwrap();
    (server.unwrap(), client.unwrap())
}

async fn pair() -> (TlsStream, ClientStream<TcpStream>) {
    pair_with(&[&TLS13]).await
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("bounded wait")
}

#[tokio::test]
async fn handshake_then_small_echo_with_alpn() {
    let (mut server, mut client) = pair().await;
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    within(client.write_all(b"hello")).await.unwrap();
    let mut buf = [0u8; 5];
    within(server.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"hello");
    within(server.write_all(b"world")).await.unwrap();
    within(client.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"world");
}

#[tokio::test]
async fn tls12_echo() {
    let (mut server, mut client) = pair_with(&[&TLS12]).await;
    within(client.write_all(b"twelve")).await.unwrap();
    let mut buf = [0u8; 6];
    within(server.read_exact(&mut buf)).await.unwrap();
    within(server.write_all(&buf)).await.unwrap();
    within(client.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"twelve");
}

/// More than a record (16 KiB) and than one write's `MAX_WRITE`, both ways,
/// with both sides writing while the other reads.
#[tokio::test]
async fn large_writes_both_ways() {
    let (mut server, mut client) = pair().await;
    let data = pattern(300_000);
    let mut got = vec![0u8; data.len()];
    let (w, r) =
        within(async { tokio::join!(client.write_all(&data), server.read_exact(&mut got)) }).await;
    w.unwrap();
    r.unwrap();
    assert!(got == data, "client → server");
    let mut back = vec![0u8; data.len()];
    let (w, r) = within(async {
        tokio::join!(
            async {
                server.write_all(&data).await?;
                server.flush().await
            },
            client.read_exact(&mut back)
        )
    })
    .await;
    w.unwrap();
    r.unwrap();
    assert!(back == data, "server → client");
}

/// A `writev` of several slices arrives whole and in order.
#[tokio::test]
async fn vectored_writes_arrive_in_order() {
    let (mut server, mut client) = pair().await;
    let (a, b, c) = (pattern(3), vec![7u8; 20_000], pattern(100));
    let mut sent = 0;
    let total = a.len() + b.len() + c.len();
    while sent < total {
        let all: Vec<u8> = [&a[..], &b[..], &c[..]].concat();
        let rest = &all[sent..];
        let (x, y) = rest.split_at(rest.len() / 2);
        sent += within(server.write_vectored(&[IoSlice::new(x), IoSlice::new(y)]))
            .await
            .unwrap();
    }
    within(server.flush()).await.unwrap();
    let mut got = vec![0u8; total];
    within(client.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, [&a[..], &b[..], &c[..]].concat());
}

/// Reads smaller than a record: the rest waits in the stream, nothing lost.
#[tokio::test]
async fn partial_reads() {
    let (mut server, mut client) = pair().await;
    let data = pattern(40_000);
    within(client.write_all(&data)).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 7];
    while got.len() < data.len() {
        let n = within(server.read(&mut buf)).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data);
}

/// The client's close_notify is the server's EOF; the server may still
/// write (half-close), and its own close_notify is the client's EOF.
#[tokio::test]
async fn close_notify_from_the_client() {
    let (mut server, mut client) = pair().await;
    within(client.write_all(b"last")).await.unwrap();
    within(client.shutdown()).await.unwrap();
    let mut got = Vec::new();
    within(server.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"last");
    within(server.write_all(b"bye")).await.unwrap();
    within(server.shutdown()).await.unwrap();
    let mut back = Vec::new();
    within(client.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"bye");
}

#[tokio::test]
async fn close_notify_from_the_server() {
    let (mut server, mut client) = pair().await;
    within(server.write_all(b"done")).await.unwrap();
    within(server.shutdown()).await.unwrap();
    let mut got = Vec::new();
    within(client.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"done");
    // Writing after our close_notify is refused, not sent.
    assert!(server.write_all(b"more").await.is_err());
}

/// A client that asks for new keys (TLS 1.3 KeyUpdate, update requested):
/// data keeps flowing both ways across it, twice.
#[tokio::test]
async fn key_updates_from_the_client() {
    let (mut server, mut client) = pair().await;
    for round in 0..2u8 {
        client.get_mut().1.refresh_traffic_keys().unwrap();
        within(client.write_all(&[round; 100])).await.unwrap();
        let mut buf = [0u8; 100];
        within(server.read_exact(&mut buf)).await.unwrap();
        assert_eq!(buf, [round; 100]);
        within(server.write_all(&[round + 10; 100])).await.unwrap();
        within(client.read_exact(&mut buf)).await.unwrap();
        assert_eq!(buf, [round + 10; 100]);
    }
}

/// Not TLS at all, or a handshake record rustls cannot parse: an error.
#[tokio::test]
async fn garbage_instead_of_a_client_hello_is_an_error() {
    let (config, _) = configs(&[&TLS13]);
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"\x16\x03\x01\x00\x04junk"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0][..],
    ] {
        let (s, mut c) = tcp_pair().await;
        c.write_all(junk).await.unwrap();
        let r = within(accept(s, config.clone())).await;
        assert!(r.is_err(), "{junk:?} was accepted");
    }
}

/// A record whose tag does not verify (bytes injected under the client's
/// TLS): the read fails, and the client is told with an alert.
#[tokio::test]
async fn a_forged_record_is_an_error() {
    let (mut server, mut client) = pair().await;
    let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    forged.extend_from_slice(&[0xab; 0x20]);
    within(client.get_mut().0.write_all(&forged)).await.unwrap();
    let mut buf = [0u8; 16];
    let e = within(server.read(&mut buf)).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(within(client.read(&mut buf)).await.is_err(), "no alert");
}

/// The connection ends inside a record (or without close_notify): an
/// error, as rustls' own reader reports it, not an EOF that looks clean.
#[tokio::test]
async fn a_truncated_record_is_an_error() {
    let (mut server, mut client) = pair().await;
    within(
        client
            .get_mut()
            .0
            .write_all(&[0x17, 0x03, 0x03, 0x01, 0x00, 1, 2, 3]),
    )
    .await
    .unwrap();
    within(client.get_mut().0.shutdown()).await.unwrap();
    let mut buf = [0u8; 16];
    let e = within(server.read(&mut buf)).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");

    // Cut inside the ClientHello.
    let (config, _) = configs(&[&TLS13]);
    let (s, mut c) = tcp_pair().await;
    c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 1, 2, 3])
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    let e = within(accept(s, config)).await.err().unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
}

/// A client that stops mid-handshake leaves `accept` waiting; the caller's
/// deadline (here 300 ms) ends it, and dropping it drops the socket.
#[tokio::test]
async fn a_stalled_handshake_is_ended_by_the_deadline() {
    let (config, _) = configs(&[&TLS13]);
    let (s, mut c) = tcp_pair().await;
    c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 1, 2, 3])
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_millis(300), accept(s, config)).await;
    assert!(r.is_err(), "the handshake did not wait for the rest");
    let mut buf = [0u8; 1];
    let n = within(c.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the socket was not closed: {n:?}"
    );
}

/// The point of this stream: once what arrived has been read (and what was
/// written has gone out), it holds no buffer. rustls' buffered connection
/// (tokio-rustls) keeps 4 KiB for reading for the connection's life.
#[tokio::test]
async fn an_idle_stream_holds_no_buffer() {
    let (mut server, mut client) = pair().await;
    assert_eq!(server.held_capacity(), 0, "after the handshake");
    let data = pattern(40_000);
    within(client.write_all(&data)).await.unwrap();
    let mut buf = [0u8; 100];
    within(server.read_exact(&mut buf)).await.unwrap();
    assert!(server.held_capacity() > 0, "the rest of a record waits");
    let mut rest = vec![0u8; data.len() - buf.len()];
    within(server.read_exact(&mut rest)).await.unwrap();
    assert_eq!(server.held_capacity(), 0, "after reading everything");
    within(server.write_all(&data)).await.unwrap();
    within(server.flush()).await.unwrap();
    let mut back = vec![0u8; data.len()];
    within(client.read_exact(&mut back)).await.unwrap();
    assert_eq!(server.held_capacity(), 0, "after writing");
    // A read that finds nothing (the idle WebSocket's state) allocates nothing.
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(100), server.read(&mut one)).await;
    assert!(r.is_err());
    assert_eq!(server.held_capacity(), 0, "while waiting for a read");
}
