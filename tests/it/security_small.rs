//! Issue 9, items 7 and 8 and the small ones: private files, the JWT secret
//! file, the name-constrained local CA, the `Host` allow-list, `HEAD`,
//! `--metrics-token`, `--web-dir` containment. Real servers, real sockets,
//! the real binary where process state (umask, exit status) matters.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use hubbub_client as client;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Kills the child when dropped, also when an assertion fails first.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary with umask 022 (the common default) set in the child.
fn hubbub_cmd(args: &[String]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CAROOT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    cmd
}

/// Test flags without `--jwt-secret`, so the server uses `DATA_DIR/jwt_secret`.
fn args_with_secret_file(data: &Path) -> Vec<String> {
    base_args_except(data, &["--jwt-secret"])
        .into_iter()
        .skip(1)
        .collect()
}

/// Every file below `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn data_dir_and_database_are_private_under_umask_022() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = Kill(hubbub_cmd(&args_with_secret_file(&data)).spawn().unwrap());
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("hubbub listening on"), "{line:?}");
    assert_eq!(mode(&data), 0o700, "data dir");
    let mut files = Vec::new();
    files_under(&data, &mut files);
    assert!(files.iter().any(|f| f.ends_with("jwt_secret")), "{files:?}");
    assert!(files.len() > 1, "sled wrote no files: {files:?}");
    for f in &files {
        assert_eq!(mode(f) & 0o077, 0, "{} is {:o}", f.display(), mode(f));
    }
}

#[tokio::test]
async fn an_open_existing_data_dir_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = TestServer::start_in(dir, &[]).await;
    assert_eq!(mode(s.dir.path()), 0o700);
    s.stop().await;
}

#[test]
fn a_jwt_secret_that_is_not_utf8_stops_the_start_and_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let secret = data.join("jwt_secret");
    let bad: Vec<u8> = (0..64u8).map(|i| 0x80 | i).collect();
    std::fs::write(&secret, &bad).unwrap();
    let mut child = Kill(hubbub_cmd(&args_with_secret_file(&data)).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "hubbub started with a broken secret"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "exit status {status}");
    assert!(err.contains("not valid UTF-8"), "stderr: {err}");
    assert_eq!(
        std::fs::read(&secret).unwrap(),
        bad,
        "the secret was replaced"
    );
}

#[test]
fn a_jwt_secret_others_can_read_is_used_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let secret = data.join("jwt_secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-shared").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = Kill(hubbub_cmd(&args_with_secret_file(&data)).spawn().unwrap());
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("hubbub listening on"), "{line:?}");
    // The secret is read before the server listens: the warning is out.
    let _ = child.0.kill();
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("JWT secret is readable by other users"),
        "stderr: {err}"
    );
    assert!(!err.contains("0123456789abcdef"), "the secret was logged");
}

// ---------------------------------------------------------------------------
// The generated CA.

fn verifier(ca_pem: &str) -> Arc<WebPkiServerVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap()
}

/// A server certificate for `name`, signed with the CA's key.
fn leaf(ca_pem: &str, ca_key: &str, name: &str) -> CertificateDer<'static> {
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(ca_pem, rcgen::KeyPair::from_pem(ca_key).unwrap()).unwrap();
    let mut p = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    p.use_authority_key_identifier_extension = true;
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    p.signed_by(&key, &issuer).unwrap().der().clone()
}

/// What a rustls client that trusts `ca_pem` says about `cert` for `name`.
fn check(v: &WebPkiServerVerifier, cert: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_generated_ca_signs_only_for_this_servers_names() {
    let s = tls_server(&["--tls-hostname", "chat.internal"]).await;
    // The server's own certificate still works for a real client.
    user_on(&s, &name("ca")).await;
    let certs = s.dir.path().join("certs");
    let ca_pem = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(certs.join("ca.key")).unwrap();
    let v = verifier(&ca_pem);
    for ok in [
        "localhost",
        "127.0.0.1",
        "::1",
        "chat.internal",
        "a.chat.internal",
    ] {
        let r = check(&v, &leaf(&ca_pem, &ca_key, ok), ok);
        assert!(r.is_ok(), "{ok}: {r:?}");
    }
    for bad in [
        "evil.example",
        "www.google.com",
        "10.1.2.3",
        "chat.internal.evil",
    ] {
        let r = check(&v, &leaf(&ca_pem, &ca_key, bad), bad);
        assert!(r.is_err(), "a stolen CA key can sign for {bad}");
    }
    s.stop().await;
}

/// The CA hubbub generated before name constraints existed: same name, none.
fn write_unconstrained_ca(certs: &Path) -> String {
    std::fs::create_dir_all(certs).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "hubbub local development CA");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "hubbub");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = p.self_signed(&key).unwrap();
    std::fs::write(certs.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(certs.join("ca.key"), key.serialize_pem()).unwrap();
    // And a server certificate it signed, good for another year.
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.pem(), key).unwrap();
    let mut lp = rcgen::CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .unwrap();
    lp.use_authority_key_identifier_extension = true;
    let lk = rcgen::KeyPair::generate().unwrap();
    let l = lp.signed_by(&lk, &issuer).unwrap();
    std::fs::write(certs.join("server.pem"), format!("{}{}", l.pem(), ca.pem())).unwrap();
    std::fs::write(certs.join("server.key"), lk.serialize_pem()).unwrap();
    ca.pem()
}

#[tokio::test]
async fn an_unconstrained_generated_ca_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let old = write_unconstrained_ca(&certs);
    let s = TestServer::start_in(dir, &["--tls", "on"]).await;
    let new = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    assert_ne!(old, new, "the unconstrained CA was kept");
    let (_, pem) = x509_parser::pem::parse_x509_pem(new.as_bytes()).unwrap();
    let ca = pem.parse_x509().unwrap();
    let nc = ca.name_constraints().unwrap().expect("no name constraints");
    assert!(nc.critical);
    // The server certificate was issued anew by the new CA: a client trusting
    // only the new ca.pem gets in.
    user_on(&s, &name("newca")).await;
    s.stop().await;
}

// ---------------------------------------------------------------------------
// HTTP: Host, HEAD, /metrics, --web-dir.

/// Status line code and the raw response, for a request sent as given.
async fn raw(addr: std::net::SocketAddr, req: String) -> (u16, String) {
    let resp = raw_http(addr, req.as_bytes()).await;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {resp:?}"));
    (status, resp)
}

fn get_with_host(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn only_known_hosts_are_served() {
    let s = TestServer::start_with(&[
        "--public-host",
        "chat.example.com",
        "--allowed-origin",
        "https://app.example.net",
    ])
    .await;
    let port = s.addr.port();
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "10.9.9.9".to_owned(),
    ] {
        for path in ["/healthz", "/", "/api/me", "/ws"] {
            let (st, resp) = raw(s.addr, get_with_host(path, &host)).await;
            assert_eq!(st, 400, "Host {host} {path}: {resp:.300}");
            let body = resp.split_once("\r\n\r\n").unwrap().1;
            assert!(body.contains("\"bad_request\""), "{body}");
            assert_no_leak(&host, body);
        }
    }
    for host in [
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "chat.example.com".to_owned(),
        "app.example.net".to_owned(),
    ] {
        let (st, resp) = raw(s.addr, get_with_host("/healthz", &host)).await;
        assert_eq!(st, 200, "Host {host}: {resp:.300}");
    }
    s.stop().await;
}

/// Splits a raw response into its head and body.
fn head_body(resp: &str) -> (&str, &str) {
    resp.split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {resp:?}"))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let s = TestServer::start().await;
    for path in ["/", "/healthz"] {
        let (st, get) = raw(s.addr, get_with_host(path, &s.addr.to_string())).await;
        assert_eq!(st, 200, "GET {path}");
        let (get_head, get_body) = head_body(&get);
        let req = format!(
            "HEAD {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            s.addr
        );
        let (st, resp) = raw(s.addr, req).await;
        assert_eq!(st, 200, "HEAD {path}: {resp:.300}");
        let (head, body) = head_body(&resp);
        assert_eq!(body, "", "HEAD {path} sent a body");
        assert_eq!(
            header(head, "content-type"),
            header(get_head, "content-type"),
            "{path}"
        );
        let len = get_body.len().to_string();
        assert_eq!(header(head, "content-length"), Some(len.as_str()), "{path}");
    }
    s.stop().await;
}

const METRICS_TOKEN: &str = "metrics-token-0123456789";

async fn metrics_status(addr: std::net::SocketAddr, auth: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    client::request(addr, "GET", "/metrics", &headers, None)
        .await
        .unwrap()
        .status
}

#[tokio::test]
async fn metrics_token_guards_metrics_and_without_it_they_stay_public() {
    let open = TestServer::start().await;
    assert_eq!(metrics_status(open.addr, None).await, 200);
    open.stop().await;

    let s = TestServer::start_with(&["--metrics-token", METRICS_TOKEN]).await;
    let right = format!("Bearer {METRICS_TOKEN}");
    let wrong = format!("Bearer {METRICS_TOKEN}x");
    assert_eq!(metrics_status(s.addr, None).await, 401);
    assert_eq!(metrics_status(s.addr, Some(&wrong)).await, 401);
    assert_eq!(metrics_status(s.addr, Some(METRICS_TOKEN)).await, 401);
    assert_eq!(metrics_status(s.addr, Some(&right)).await, 200);
    let r = client::request(s.addr, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(error_code(&r), "unauthorized");
    assert!(
        !r.body.contains("hubbub_"),
        "metrics leaked: {:.200}",
        r.body
    );
    s.stop().await;

    // The separate metrics port checks it too.
    let s = TestServer::start_with(&[
        "--metrics-token",
        METRICS_TOKEN,
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .await;
    let m = s.running.as_ref().unwrap().metrics_addr.unwrap();
    assert_eq!(metrics_status(m, None).await, 401);
    assert_eq!(metrics_status(m, Some(&right)).await, 200);
    s.stop().await;

    assert!(
        hubbub::config::Config::from_args(["hubbub", "--metrics-token", "short"])
            .unwrap()
            .validate()
            .is_err()
    );
}

#[tokio::test]
async fn web_dir_serves_neither_dotfiles_nor_symlinks_out_of_it() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "OUTSIDE-SECRET").unwrap();
    let web = tempfile::tempdir().unwrap();
    let w = web.path();
    std::fs::write(w.join("index.html"), "<html>dev ui</html>").unwrap();
    std::fs::write(w.join("app.js"), "// app").unwrap();
    std::fs::write(w.join(".secret"), "DOTFILE-SECRET").unwrap();
    std::fs::create_dir(w.join(".git")).unwrap();
    std::fs::write(w.join(".git").join("config"), "DOTDIR-SECRET").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), w.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), w.join("out")).unwrap();
    std::os::unix::fs::symlink(w.join("app.js"), w.join("alias.js")).unwrap();
    let s = TestServer::start_with(&["--web-dir", w.to_str().unwrap()]).await;
    for (path, want) in [
        ("/", "dev ui"),
        ("/index.html", "dev ui"),
        ("/app.js", "// app"),
        ("/alias.js", "// app"),
    ] {
        let (st, body) = raw_get(s.addr, path).await;
        assert_eq!(st, 200, "{path}");
        assert!(body.contains(want), "{path}: {body:.200}");
    }
    for path in [
        "/.secret",
        "/%2esecret",
        "/.git/config",
        "/escape.txt",
        "/out/secret.txt",
        "/out/",
    ] {
        let (st, body) = raw_get(s.addr, path).await;
        assert_eq!(st, 404, "{path}: {body:.200}");
        assert!(!body.contains("SECRET"), "{path} served {body:.200}");
    }
    s.stop().await;
}
