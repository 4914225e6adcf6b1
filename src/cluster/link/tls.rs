//! TLS 1.3 for node links: an ephemeral self-signed certificate per process
//! and a client that accepts any certificate.
//!
//! Why accepting any certificate is safe here: a node's identity is not its
//! certificate but the hello's proof of the cluster secret, bound to this
//! TLS session's exporter (see `hello`). TLS gives confidentiality and
//! integrity; the proof gives authentication. The verifier still checks the
//! handshake signature against the presented certificate, so the server
//! must hold the certificate's private key and the session is a proper
//! TLS 1.3 session (the exporter is only as good as that).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name in the ephemeral certificate (no one checks it; see above).
const CERT_NAME: &str = "hubbub-node-link";

/// Building the TLS configuration failed (certificate generation).
#[derive(Debug, thiserror::Error)]
#[error("node-link TLS setup: {0}")]
pub struct TlsSetupError(String);

impl TlsSetupError {
    pub(super) fn new(why: String) -> Self {
        Self(why)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The accepting side, with a fresh self-signed certificate.
pub fn acceptor() -> Result<TlsAcceptor, TlsSetupError> {
    let err = |e: &dyn std::fmt::Display| TlsSetupError(e.to_string());
    let ck = rcgen::generate_simple_self_signed(vec![CERT_NAME.to_owned()]).map_err(|e| err(&e))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .map_err(|e| err(&e))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The dialing side: TLS 1.3 only, any certificate whose key signed the
/// handshake.
pub fn connector() -> Result<TlsConnector, TlsSetupError> {
    let provider = provider();
    let verifier = Arc::new(AnyCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsSetupError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// What the dialer names the server: its IP (no SNI is sent for an IP).
pub fn server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Identity comes from the hello's proof, not from the PKI.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered; a 1.2 handshake here is a protocol error.
        Err(rustls::Error::General(
            "node links speak TLS 1.3 only".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
