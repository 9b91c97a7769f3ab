//! SIP over TLS, the `[sip]` keys `listen_tls`, `tls_cert`, `tls_key`, `tls_ca_file`
//! and `tls_handshake_timeout_ms`: the PEM files read and checked at start-up (and by
//! `check-config`), and the rustls configurations built from them. TLS 1.2 and 1.3
//! only, with ring as the crypto provider.

use ipnet::IpNet;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The default bound on a TLS handshake (`sip.tls_handshake_timeout_ms`).
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// Why a certificate, key or CA file cannot be used. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{path}: no such file")]
    Missing { path: String },
    #[error("{path}: cannot read: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a PEM file ({reason})")]
    NotPem { path: String, reason: String },
    #[error("{path}: holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("{path}: the key cannot be used: {reason}")]
    BadKey { path: String, reason: String },
    #[error("the key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error("{path}: a certificate cannot be used as a trust anchor: {reason}")]
    BadCa { path: String, reason: String },
}

/// The crypto provider of every TLS configuration handoff builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2; never anything older (rustls has nothing older either).
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The checked TLS settings of `[sip]`.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// `sip.listen_tls`; empty: no TLS listener.
    pub listen: Vec<SocketAddr>,
    /// The server side: built when `listen` is not empty.
    pub server: Option<TlsServer>,
    /// The client side (outbound TLS): system roots plus `sip.tls_ca_file`.
    pub client: Arc<rustls::ClientConfig>,
    /// `sip.tls_handshake_timeout_ms`.
    pub handshake_timeout: Duration,
    /// Our client certificates per destination (`tls_client_cert`, `tls_client_key`).
    pub identities: super::tls_client::ClientIdentities,
}

/// What the TLS listeners present, and where it was read from (for a reload).
#[derive(Debug, Clone)]
pub struct TlsServer {
    pub config: Arc<rustls::ServerConfig>,
    pub cert: Arc<ServerCert>,
    /// Mutual TLS per trunk: a connection from one of these sources gets this
    /// configuration, which requires a client certificate (`trunk.tls_client_ca`).
    pub client_auth: Vec<(Vec<IpNet>, Arc<rustls::ServerConfig>)>,
}

impl TlsServer {
    /// Require a client certificate chaining to the CAs of `ca_file` from `sources`
    /// (same certificate presented, reloaded with the rest).
    pub fn add_client_auth(
        &mut self,
        sources: Vec<IpNet>,
        ca_file: &Path,
    ) -> Result<(), TlsFileError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(&read(ca_file)?, ca_file)? {
            roots.add(ca).map_err(|e| TlsFileError::BadCa {
                path: ca_file.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let bad_ca = |reason: String| TlsFileError::BadCa {
            path: ca_file.display().to_string(),
            reason,
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| bad_ca(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| bad_ca(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.cert.clone());
        self.client_auth.push((sources, Arc::new(config)));
        Ok(())
    }
}

/// The configuration for a connection from `ip`: the first trunk listing it that
/// wants client certificates, else `default`.
pub fn config_for<'a, T>(
    ip: std::net::IpAddr,
    client_auth: &'a [(Vec<IpNet>, T)],
    default: &'a T,
) -> &'a T {
    client_auth
        .iter()
        .find(|(nets, _)| nets.iter().any(|n| n.contains(&ip)))
        .map_or(default, |(_, c)| c)
}

/// The listener's certificate and key, swapped whole on a reload: handshakes after the
/// swap present the new one, connections already up keep theirs.
#[derive(Debug)]
pub struct ServerCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// The pair in these PEM files, checked, ready to present (as a server or as a
    /// client: a per-destination client identity is one of these).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerCert>, TlsFileError> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(Arc::new(ServerCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Read the files again; on success the next handshakes use them. On failure the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsFileError> {
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }
}

impl ServerCert {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Outbound, our certificate is presented only when the peer asks for one (mutual
/// TLS at a carrier or an SBC): the listener's own pair, reloaded with it.
impl rustls::client::ResolvesClientCert for ServerCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server configuration for the certificate chain and key in these PEM files.
pub fn server(cert_path: &Path, key_path: &Path) -> Result<TlsServer, TlsFileError> {
    let cert = ServerCert::load(cert_path, key_path)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsFileError::BadKey {
            path: key_path.display().to_string(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    Ok(TlsServer {
        config: Arc::new(config),
        cert,
        client_auth: Vec::new(),
    })
}

/// The client configuration: the Mozilla roots (webpki-roots) and, when given, the
/// CAs of `ca_file` (a private CA, a carrier's own). `own`: the listener's pair,
/// presented when a server asks for a client certificate.
pub fn client(
    ca_file: Option<&Path>,
    own: Option<Arc<ServerCert>>,
) -> Result<rustls::ClientConfig, TlsFileError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let text = read(path)?;
        for ca in certificates(&text, path)? {
            roots.add(ca).map_err(|e| TlsFileError::BadCa {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsFileError::BadCa {
            path: String::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    Ok(match own {
        Some(cert) => {
            let mut c = config.with_client_cert_resolver(cert);
            // A resumed TLS 1.3 session carries the identity of its first handshake,
            // not the certificate read again on SIGHUP: every connection presenting
            // a certificate does a full handshake (connections are long-lived).
            c.resumption = rustls::client::Resumption::disabled();
            c
        }
        None => config.with_no_client_auth(),
    })
}

fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsFileError> {
    let chain = certificates(&read(cert_path)?, cert_path)?;
    let key = private_key(&read(key_path)?, key_path)?;
    certified_key(chain, key, cert_path, key_path)
}

/// Chain and key as one usable pair: the key loads, and it is the certificate's.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsFileError> {
    let signing =
        provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsFileError::BadKey {
                path: key_path.display().to_string(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsFileError::KeyMismatch {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
        }),
        Err(e) => Err(TlsFileError::NotPem {
            path: cert_path.display().to_string(),
            reason: format!("the first certificate cannot be parsed: {e}"),
        }),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TlsFileError::Missing {
            path: path.display().to_string(),
        },
        _ => TlsFileError::Unreadable {
            path: path.display().to_string(),
            source,
        },
    })
}

/// Every certificate of a PEM text, in order (leaf first for a chain).
pub fn certificates(
    pem_text: &[u8],
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_slice_iter(pem_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(path, e))?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM text.
pub fn private_key(pem_text: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_slice(pem_text).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsFileError::NoKey {
            path: path.display().to_string(),
        },
        e => not_pem(path, e),
    })
}

fn not_pem(path: &Path, e: pem::Error) -> TlsFileError {
    TlsFileError::NotPem {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The `[sip]` TLS keys, as written.
#[derive(Debug, Clone, Default)]
pub struct TlsKeys<'a> {
    pub listen_tls: &'a [SocketAddr],
    pub tls_cert: Option<&'a str>,
    pub tls_key: Option<&'a str>,
    pub tls_ca_file: Option<&'a str>,
    pub tls_handshake_timeout_ms: u64,
}

/// Check the TLS keys and read their files: `Err((key, problem))` names the key.
pub fn validate(k: &TlsKeys<'_>) -> Result<TlsSettings, (&'static str, String)> {
    if !(100..=60_000).contains(&k.tls_handshake_timeout_ms) {
        return Err((
            "sip.tls_handshake_timeout_ms",
            "must be between 100 and 60000".into(),
        ));
    }
    let server = match (k.listen_tls.is_empty(), k.tls_cert, k.tls_key) {
        (true, None, None) => None,
        (true, Some(_), _) => {
            return Err(("sip.tls_cert", "is set but sip.listen_tls is empty".into()))
        }
        (true, None, Some(_)) => {
            return Err(("sip.tls_key", "is set but sip.listen_tls is empty".into()))
        }
        (false, None, _) => {
            return Err((
                "sip.tls_cert",
                "sip.listen_tls needs a certificate chain (PEM file)".into(),
            ))
        }
        (false, Some(_), None) => {
            return Err((
                "sip.tls_key",
                "sip.listen_tls needs the certificate's private key (PEM file)".into(),
            ))
        }
        (false, Some(cert), Some(key)) => {
            let which = |e: &TlsFileError| match e {
                TlsFileError::NoKey { .. } | TlsFileError::BadKey { .. } => "sip.tls_key",
                TlsFileError::Missing { path }
                | TlsFileError::Unreadable { path, .. }
                | TlsFileError::NotPem { path, .. }
                    if path == key =>
                {
                    "sip.tls_key"
                }
                _ => "sip.tls_cert",
            };
            Some(server(Path::new(cert), Path::new(key)).map_err(|e| (which(&e), e.to_string()))?)
        }
    };
    let client = client(
        k.tls_ca_file.map(Path::new),
        server.as_ref().map(|s| s.cert.clone()),
    )
    .map_err(|e| ("sip.tls_ca_file", e.to_string()))?;
    Ok(TlsSettings {
        listen: k.listen_tls.to_vec(),
        server,
        client: Arc::new(client),
        handshake_timeout: Duration::from_millis(k.tls_handshake_timeout_ms),
        identities: super::tls_client::ClientIdentities::new(k.tls_ca_file.map(Path::new)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let k = rcgen::KeyPair::generate().expect("key");
        let c = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&k)
            .expect("cert");
        (c.pem(), k.serialize_pem())
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn a_matching_chain_and_key_load() {
        let (cert, key) = pair("sip.example.com");
        let chain = certificates(cert.as_bytes(), p("c.pem")).expect("certs");
        let key = private_key(key.as_bytes(), p("k.pem")).expect("key");
        certified_key(chain, key, p("c.pem"), p("k.pem")).expect("pair");
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch() {
        let (cert, _) = pair("a.example.com");
        let (_, other_key) = pair("b.example.com");
        let chain = certificates(cert.as_bytes(), p("c.pem")).expect("certs");
        let key = private_key(other_key.as_bytes(), p("k.pem")).expect("key");
        let err = certified_key(chain, key, p("c.pem"), p("k.pem")).expect_err("mismatch");
        assert!(matches!(err, TlsFileError::KeyMismatch { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "the key in k.pem does not match the certificate in c.pem"
        );
    }

    #[test]
    fn text_that_is_not_pem_holds_no_certificate_or_key() {
        let err = certificates(b"hello", p("c.pem")).expect_err("no cert");
        assert!(matches!(err, TlsFileError::NoCertificate { .. }), "{err}");
        let err = private_key(b"hello", p("k.pem")).expect_err("no key");
        assert!(matches!(err, TlsFileError::NoKey { .. }), "{err}");
        // A key file given as the certificate: no certificate in it.
        let (_, key) = pair("a.example.com");
        let err = certificates(key.as_bytes(), p("k.pem")).expect_err("key is no cert");
        assert!(matches!(err, TlsFileError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn a_broken_pem_block_is_not_pem() {
        let text = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = certificates(text, p("c.pem")).expect_err("broken");
        assert!(matches!(err, TlsFileError::NotPem { .. }), "{err}");
    }

    #[test]
    fn missing_files_are_named() {
        let err = server(p("/nonexistent/c.pem"), p("/nonexistent/k.pem")).expect_err("missing");
        assert_eq!(err.to_string(), "/nonexistent/c.pem: no such file");
        let err = client(Some(p("/nonexistent/ca.pem")), None).expect_err("missing");
        assert_eq!(err.to_string(), "/nonexistent/ca.pem: no such file");
    }

    #[test]
    fn the_client_trusts_the_web_roots_without_a_ca_file() {
        let c = client(None, None).expect("client");
        assert!(c.enable_sni);
    }

    fn keys<'a>(
        listen: &'a [SocketAddr],
        cert: Option<&'a str>,
        key: Option<&'a str>,
    ) -> TlsKeys<'a> {
        TlsKeys {
            listen_tls: listen,
            tls_cert: cert,
            tls_key: key,
            tls_ca_file: None,
            tls_handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
        }
    }

    #[test]
    fn a_source_of_a_client_auth_trunk_gets_its_configuration() {
        let nets = |s: &str| vec![s.parse::<IpNet>().expect("net")];
        let list = [(nets("192.0.2.0/24"), 1), (nets("198.51.100.7/32"), 2)];
        let ip = |s: &str| s.parse().expect("ip");
        assert_eq!(*config_for(ip("192.0.2.9"), &list, &0), 1);
        assert_eq!(*config_for(ip("198.51.100.7"), &list, &0), 2);
        assert_eq!(*config_for(ip("203.0.113.1"), &list, &0), 0);
    }

    #[test]
    fn tls_is_off_without_listen_tls_and_files() {
        let s = validate(&keys(&[], None, None)).expect("off");
        assert!(s.server.is_none() && s.listen.is_empty());
    }

    #[test]
    fn each_missing_piece_names_its_key() {
        let l = ["127.0.0.1:5061".parse().expect("addr")];
        assert_eq!(
            validate(&keys(&l, None, None)).expect_err("no cert").0,
            "sip.tls_cert"
        );
        assert_eq!(
            validate(&keys(&l, Some("c.pem"), None))
                .expect_err("no key")
                .0,
            "sip.tls_key"
        );
        assert_eq!(
            validate(&keys(&[], Some("c.pem"), Some("k.pem")))
                .expect_err("no listener")
                .0,
            "sip.tls_cert"
        );
        let (key, problem) =
            validate(&keys(&l, Some("/nonexistent/c.pem"), Some("k.pem"))).expect_err("missing");
        assert_eq!(
            (key, problem.as_str()),
            ("sip.tls_cert", "/nonexistent/c.pem: no such file")
        );
        let mut k = keys(&[], None, None);
        k.tls_handshake_timeout_ms = 0;
        assert_eq!(
            validate(&k).expect_err("zero").0,
            "sip.tls_handshake_timeout_ms"
        );
        k.tls_handshake_timeout_ms = 1000;
        k.tls_ca_file = Some("/nonexistent/ca.pem");
        assert_eq!(validate(&k).expect_err("no CA file").0, "sip.tls_ca_file");
    }

    #[test]
    fn a_key_file_that_is_not_pem_names_tls_key() {
        let dir = std::env::temp_dir().join(format!("handoff-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, _) = pair("a.example.com");
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, cert).expect("write");
        std::fs::write(&k, "not a key").expect("write");
        let l = ["127.0.0.1:5061".parse().expect("addr")];
        let (c, k) = (c.display().to_string(), k.display().to_string());
        let (key, problem) = validate(&keys(&l, Some(&c), Some(&k))).expect_err("bad key");
        assert_eq!(key, "sip.tls_key");
        assert!(problem.contains("holds no PEM private key"), "{problem}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
