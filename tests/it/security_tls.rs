//! Security: TLS. https and wss with the generated CA; the CA and server
//! certificate are kept across restarts and renewed for new host names; keys
//! are private; mkcert's CA is used through `$CAROOT`; `--tls-cert` files are
//! served and reloaded on SIGHUP without dropping sockets; plain HTTP on the
//! TLS port gets a quick 400; stalled handshakes and headers are dropped; the
//! served certificate's names are allowed `Host`s, also after a reload.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use hubbub_client::{self as client, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CERT_FILES: [&str; 4] = ["ca.pem", "ca.key", "server.pem", "server.key"];

fn read_all(certs: &Path) -> Vec<Vec<u8>> {
    CERT_FILES
        .iter()
        .map(|f| std::fs::read(certs.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect()
}

/// The DNS names and IP addresses in the first certificate of a PEM file.
fn sans(pem_path: &Path) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let pem = std::fs::read(pem_path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string())
            }
            GeneralName::IPAddress(b) if b.len() == 16 => {
                Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string())
            }
            _ => None,
        })
        .collect()
}

/// (issuer, subject) of the first certificate in a PEM file, as text.
fn issuer_subject(pem_path: &Path) -> (String, String) {
    let pem = std::fs::read(pem_path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    (cert.issuer().to_string(), cert.subject().to_string())
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_work_with_the_generated_ca() {
    let s = tls_server(&[]).await;
    let ep = s.endpoint();
    let r = client::request(&ep, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = client::request(&ep, "GET", "/", &[], None).await.unwrap();
    assert_eq!(r.status, 200);
    // A plain client gets nothing useful from the TLS port.
    let plain = client::request(s.addr, "GET", "/healthz", &[], None)
        .await
        .expect("plain HTTP on the TLS port gets an answer");
    assert_eq!(plain.status, 400, "{}", plain.body);
    // A client that does not trust the CA refuses the server.
    let other = tempfile::tempdir().unwrap();
    hubbub::tls::certs::ensure_ca(other.path(), &[]).unwrap();
    let untrusted = Endpoint::tls(s.addr, &other.path().join("ca.pem")).unwrap();
    assert!(
        !serves_for(&untrusted).await,
        "a foreign CA must not validate the server"
    );

    let alice = user_on(&s, &name("alice")).await;
    let mut ws = join_on(&s, &alice, "tls").await;
    let echo = say_saved(&mut ws, "over wss").await;
    assert_eq!(echo["content"], "over wss");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reused_on_restart_and_renewed_for_a_new_hostname() {
    // One certs dir shared by three servers started one after another.
    let shared = tempfile::tempdir().unwrap();
    let certs = shared.path().join("certs");
    let certs_s = certs.display().to_string();
    let s = tls_server(&["--certs-dir", &certs_s]).await;
    let first = read_all(&certs);
    #[cfg(unix)]
    for key in ["ca.key", "server.key"] {
        assert_eq!(mode(&certs.join(key)), 0o600, "{key} must be private");
    }
    s.stop().await;

    // Same files, same bytes, and the old CA still validates.
    let s = tls_server(&["--certs-dir", &certs_s]).await;
    assert_eq!(
        read_all(&certs),
        first,
        "restart must reuse CA and certificate"
    );
    let ep = Endpoint::tls(s.addr, &certs.join("ca.pem")).unwrap();
    let r = client::request(ep, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    s.stop().await;

    // A new host name: the CA is name-constrained to the names it was made
    // for, so a new CA (to be trusted again) and a new server certificate.
    let s = tls_server(&[
        "--certs-dir",
        &certs_s,
        "--tls-hostname",
        "chat.example.test",
    ])
    .await;
    let now = read_all(&certs);
    assert_ne!(now[0], first[0], "a CA constrained to the new name");
    assert_ne!(now[1], first[1], "with a new key");
    assert_ne!(now[2], first[2], "the server certificate is reissued");
    assert_ne!(now[3], first[3], "with a new key");
    let names = sans(&certs.join("server.pem"));
    for n in ["chat.example.test", "localhost", "127.0.0.1"] {
        assert!(names.iter().any(|h| h == n), "{n} missing from {names:?}");
    }
    let (issuer, _) = issuer_subject(&certs.join("server.pem"));
    let (_, ca_subject) = issuer_subject(&certs.join("ca.pem"));
    assert_eq!(issuer, ca_subject);
    #[cfg(unix)]
    for key in ["ca.key", "server.key"] {
        assert_eq!(mode(&certs.join(key)), 0o600, "{key} must stay private");
    }
    let ep = Endpoint::tls(s.addr, &certs.join("ca.pem")).unwrap();
    let r = client::request(ep, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mkcert_ca_from_caroot_signs_the_certificate() {
    // A CA made by one server, laid out the way mkcert does.
    let maker = tls_server(&[]).await;
    let caroot = tempfile::tempdir().unwrap();
    let made = maker.dir.path().join("certs");
    std::fs::copy(made.join("ca.pem"), caroot.path().join("rootCA.pem")).unwrap();
    std::fs::copy(made.join("ca.key"), caroot.path().join("rootCA-key.pem")).unwrap();
    maker.stop().await;

    let data = tempfile::tempdir().unwrap();
    let p = spawn_hubbub(
        &proc_args(data.path(), &["--tls", "on"]),
        &[("CAROOT", caroot.path())],
    );
    let ep = Endpoint::tls(p.addr, &caroot.path().join("rootCA.pem")).unwrap();
    let r = client::request(&ep, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let certs = data.path().join("certs");
    assert!(
        !certs.join("ca.pem").exists(),
        "with a mkcert CA the server must not make its own"
    );
    assert!(certs.join("server.pem").is_file());
    let alice = client::signup_or_login(&ep, "mk_alice", PASSWORD)
        .await
        .unwrap();
    let mut ws = client::join(&ep, &alice, "mk", None, None).await.unwrap();
    ws.expect("welcome", T).await.unwrap();
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cert_files_are_served_and_sighup_reloads_them_without_dropping_sockets() {
    let work = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    hubbub::tls::certs::ensure_server_cert(&a, &names).unwrap();
    hubbub::tls::certs::ensure_server_cert(&b, &names).unwrap();
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    std::fs::copy(a.join("server.pem"), &cert).unwrap();
    std::fs::copy(a.join("server.key"), &key).unwrap();

    let data = work.path().join("data");
    let cert_s = cert.display().to_string();
    let key_s = key.display().to_string();
    let p = spawn_hubbub(
        &proc_args(
            &data,
            &["--tls", "on", "--tls-cert", &cert_s, "--tls-key", &key_s],
        ),
        &[],
    );
    let addr = p.addr;
    // A fresh client config each time: no TLS session resumption, so every
    // check sees the certificate the server presents now.
    let healthy = |ca: std::path::PathBuf| async move {
        serves_for(&Endpoint::tls(addr, &ca).unwrap()).await
    };
    let (ca_a, ca_b) = (a.join("ca.pem"), b.join("ca.pem"));
    assert!(healthy(ca_a.clone()).await, "serves --tls-cert");
    assert!(!healthy(ca_b.clone()).await, "not yet the other cert");
    let ep_a = Endpoint::tls(addr, &ca_a).unwrap();

    let alice = client::signup_or_login(&ep_a, "hup_alice", PASSWORD)
        .await
        .unwrap();
    let mut ws = client::join(&ep_a, &alice, "hup", None, None)
        .await
        .unwrap();
    ws.expect("history", T).await.unwrap();

    swap_cert_and_hup(&b, &cert, &key, p.child.id());
    let deadline = tokio::time::Instant::now() + T;
    while !healthy(ca_b.clone()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new connections still do not see the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!healthy(ca_a.clone()).await, "the old cert is gone");
    // The socket opened before the reload still chats.
    let echo = say_saved(&mut ws, "still here").await;
    assert_eq!(echo["content"], "still here");
    drop(p);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_quick_400() {
    let s = tls_server(&[]).await;
    let req = format!(
        "GET /api/me HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.addr
    );
    let resp = tokio::time::timeout(T, raw_http(s.addr, req.as_bytes()))
        .await
        .expect("the server must answer, not hang");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp:?}");
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "bad_request", "{body}");
    s.stop().await;
}

/// `true` when a client trusting `ep`'s CA gets `200` from `/healthz`, `false`
/// when its TLS handshake rejects the server's certificate. Anything else (the
/// server gone, a refused connection, another status) panics: "not this
/// certificate" checks must not pass because the server is down.
async fn serves_for(ep: &Endpoint) -> bool {
    match client::request(ep.clone(), "GET", "/healthz", &[], None).await {
        Ok(r) => {
            assert_eq!(r.status, 200, "{}", r.body);
            true
        }
        Err(e) => {
            let e = format!("{e:#}");
            assert!(
                e.contains("certificate"),
                "expected a certificate rejection, got: {e}"
            );
            false
        }
    }
}

/// Reads until the peer closes; `true` when it closed within 15 s.
/// Puts the certificate and key from directory `from` in place of the served
/// ones and tells the server (pid) to reload them.
fn swap_cert_and_hup(from: &Path, cert: &Path, key: &Path, pid: u32) {
    std::fs::copy(from.join("server.key"), key).unwrap();
    std::fs::copy(from.join("server.pem"), cert).unwrap();
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

async fn closed_within_15s(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), io.read_to_end(&mut buf))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_handshakes_and_headers_are_dropped() {
    let s = tls_server(&[]).await;
    let addr = s.addr;
    // Connects and sends nothing at all.
    let silent = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        closed_within_15s(&mut tcp).await
    };
    // Starts a TLS record and stops.
    let half = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        closed_within_15s(&mut tcp).await
    };
    // Completes TLS, then sends headers slowly (slowloris).
    let ep = s.endpoint();
    let slow = async {
        let mut io = ep.connect().await.unwrap();
        io.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        io.flush().await.unwrap();
        closed_within_15s(&mut io).await
    };
    let (silent, half, slow) = tokio::join!(silent, half, slow);
    assert!(silent, "a silent TCP connection was kept open past 15 s");
    assert!(half, "a stalled TLS handshake was kept open past 15 s");
    assert!(slow, "unfinished request headers were waited for past 15 s");
    // The server is still fine.
    let r = client::request(s.endpoint(), "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    s.stop().await;
}

/// The status of `GET /healthz` with `Host: host` over TLS to `addr`, the
/// handshake made for `sni` and verified against `ca`; `None` when the
/// handshake fails (e.g. the server does not serve a certificate for `sni`).
async fn status_with_host(
    addr: std::net::SocketAddr,
    ca: &Path,
    sni: &str,
    host: &str,
) -> Option<u16> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let mut io = connector.connect(name, tcp).await.ok()?;
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    io.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, io.read_to_end(&mut buf)).await;
    let resp = String::from_utf8_lossy(&buf);
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    if status == 400 {
        assert!(resp.contains("\"bad_request\""), "{resp}");
    }
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_certificates_names_are_allowed_hosts_and_follow_sighup() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    hubbub::tls::certs::ensure_server_cert(&a, &names(&["chat.test", "*.wild.test", "192.0.2.7"]))
        .unwrap();
    hubbub::tls::certs::ensure_server_cert(&b, &names(&["other.test"])).unwrap();
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    std::fs::copy(a.join("server.pem"), &cert).unwrap();
    std::fs::copy(a.join("server.key"), &key).unwrap();
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    // No --public-host, no --tls-hostname: the certificate alone names the server.
    let p = spawn_hubbub(
        &proc_args(
            &work.path().join("data"),
            &["--tls", "on", "--tls-cert", &cert_s, "--tls-key", &key_s],
        ),
        &[],
    );
    let (addr, ca_a, ca_b) = (p.addr, a.join("ca.pem"), b.join("ca.pem"));
    let port = addr.port();
    for (host, want) in [
        ("chat.test".to_owned(), 200),
        (format!("Chat.Test.:{port}"), 200),
        ("x.wild.test".to_owned(), 200),
        (format!("x.wild.test:{port}"), 200),
        ("192.0.2.7".to_owned(), 200),
        ("localhost".to_owned(), 200),
        ("evil.example".to_owned(), 400),
        ("wild.test".to_owned(), 400),
        ("a.b.wild.test".to_owned(), 400),
        ("other.test".to_owned(), 400),
        ("192.0.2.8".to_owned(), 400),
    ] {
        let st = status_with_host(addr, &ca_a, "chat.test", &host).await;
        assert_eq!(st, Some(want), "Host {host} with the first certificate");
    }

    swap_cert_and_hup(&b, &cert, &key, p.child.id());
    let deadline = tokio::time::Instant::now() + T;
    while status_with_host(addr, &ca_b, "other.test", "other.test").await != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Host other.test is still refused after the reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The allow-list follows the served certificate: the old names are gone.
    for (host, want) in [
        ("chat.test", 400),
        ("x.wild.test", 400),
        ("192.0.2.7", 400),
        ("evil.example", 400),
        ("localhost", 200),
    ] {
        let st = status_with_host(addr, &ca_b, "other.test", host).await;
        assert_eq!(st, Some(want), "Host {host} after the reload");
    }
    drop(p);
}
