//! The embedded broker's TLS listener: its certificate chain and key read from PEM files into
//! a rustls server configuration (TLS 1.2 and 1.3, no client certificates: nodes log in with
//! their key inside MQTT, as on the plain port).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::MqttError;

/// Where the TLS listener listens and what it presents.
#[derive(Clone, Debug)]
pub struct TlsListen {
    /// The address (8883 is MQTT over TLS's registered port).
    pub addr: SocketAddr,
    /// PEM file with the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The acceptor for `t`'s certificate and key; errors name the file and what is wrong with it.
pub fn acceptor(t: &TlsListen) -> Result<tokio_rustls::TlsAcceptor, MqttError> {
    let bad = |path: &Path, message: String| MqttError::Tls {
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| bad(&t.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&t.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(&t.cert, "no CERTIFICATE block in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| bad(&t.key, e.to_string()))?;
    // ring: the provider the build already has (object_store's HTTP client uses it); rustls
    // 0.23.48 deprecates it for lacking post-quantum key exchange, which MQTT clients on
    // microcontrollers (mbedTLS, LuaSec/OpenSSL 3.0) do not offer anyway. aws-lc-rs would add a
    // C and CMake build.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&t.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&t.key, format!("the key does not fit the certificate: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
