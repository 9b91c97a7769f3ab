//! The client of `bench/tls_load.sh` (issue 14): full TLS handshakes per second
//! against a SIP/TLS listener, and N idle TLS connections held open (for the
//! target's memory per connection). tokio-rustls with the ring provider; no session
//! resumption, so every handshake is a full one.
//!
//! ```text
//! tls_load certs DIR                      # ECDSA P-256 CA + leaf for 127.0.0.1 (PEM)
//! tls_load handshakes ADDR CA VERSION SECS CONCURRENCY
//! tls_load idle ADDR CA VERSION N         # opens N, prints "open N", holds until stdin closes
//! ```
//! VERSION is `1.3` or `1.2`. Results go to stdout as `key=value` lines.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn usage() -> ! {
    eprintln!(
        "usage: tls_load certs DIR | handshakes ADDR CA 1.3|1.2 SECS CONCURRENCY | idle ADDR CA 1.3|1.2 N"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

/// A CA and a leaf for 127.0.0.1, both ECDSA P-256 (rcgen's default key).
fn certs(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    std::fs::create_dir_all(dir).expect("dir");
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tls_load bench CA");
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let leaf = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("cert.pem"), format!("{}{}", leaf.pem(), ca.pem())).expect("write");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
}

fn connector(ca: &str, version: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA PEM")).expect("CA anchor");
    }
    let v: &[&rustls::SupportedProtocolVersion] = match version {
        "1.3" => &[&rustls::version::TLS13],
        "1.2" => &[&rustls::version::TLS12],
        _ => usage(),
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(v)
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Every handshake a full one.
    cfg.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(cfg))
}

async fn handshake(
    c: &TlsConnector,
    addr: SocketAddr,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(Duration::from_secs(5), c.connect(name, tcp))
        .await
        .ok()?
        .ok()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("certs") => certs(std::path::Path::new(&arg::<String>(&args, 2))),
        Some("handshakes") => {
            let addr: SocketAddr = arg(&args, 2);
            let c = connector(&arg::<String>(&args, 3), &arg::<String>(&args, 4));
            let secs: u64 = arg(&args, 5);
            let conc: usize = arg(&args, 6);
            let ok = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let until = Instant::now() + Duration::from_secs(secs);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..conc {
                let (c, ok, failed) = (c.clone(), ok.clone(), failed.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < until {
                        match handshake(&c, addr).await {
                            Some(s) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                drop(s);
                            }
                            None => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let ok = ok.load(Ordering::Relaxed);
            println!("handshakes={ok}");
            println!("failed={}", failed.load(Ordering::Relaxed));
            println!("seconds={elapsed:.2}");
            println!("per_second={:.0}", ok as f64 / elapsed);
        }
        Some("idle") => {
            let addr: SocketAddr = arg(&args, 2);
            let c = connector(&arg::<String>(&args, 3), &arg::<String>(&args, 4));
            let n: usize = arg(&args, 5);
            let mut open = Vec::with_capacity(n);
            let mut failed = 0;
            for _ in 0..n {
                match handshake(&c, addr).await {
                    Some(s) => open.push(s),
                    None => failed += 1,
                }
            }
            println!("open={} failed={failed}", open.len());
            // Hold them until the script closes our stdin.
            tokio::task::block_in_place(|| {
                let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
            });
            drop(open);
        }
        _ => usage(),
    }
}
