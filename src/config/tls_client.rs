//! Mutual TLS outbound: handoff's own client certificate per destination, keyed by
//! name. `tls_client_cert` + `tls_client_key` (PEM) on a `[[transfer.destination]]`
//! or a `[[route]]` (the AI agent) register a client identity here at start-up
//! (files read and checked, errors naming the key); the TLS connector keeps one
//! client configuration per identity, and connections are reused only by the same
//! identity (`sip::transport::tls::may_reuse`). Reloaded on SIGHUP with the server
//! certificate.
//!
//! Another outbound side (a trunk) takes part with one line at start-up,
//! `tls.identities.add(&format!("trunk:{name}"), cert, key)`, and one at dial time,
//! `layer.client_identity("trunk:<name>")` passed to `peer_for_as`.

use super::tls::{client, ServerCert, TlsFileError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One client identity, as the transport knows it: an index into
/// [`ClientIdentities`]. Small and `Copy`, so a `Peer` can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u16);

/// The name an identity of a `[[transfer.destination]]` is registered under.
pub fn destination_identity(name: &str) -> String {
    format!("transfer.destination:{name}")
}

/// The name an identity of the `i`th `[[route]]` is registered under.
pub fn route_identity(i: usize) -> String {
    format!("route:{i}")
}

/// A registered identity: its name, the pair (reloadable), the client
/// configuration that presents it.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub name: String,
    pub cert: Arc<ServerCert>,
    pub config: Arc<rustls::ClientConfig>,
}

/// Every client identity of the configuration, in `ClientId` order.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentities {
    /// `sip.tls_ca_file`: what every identity's configuration trusts besides the roots.
    ca_file: Option<PathBuf>,
    list: Vec<ClientIdentity>,
}

/// Most identities one configuration may register.
pub const MAX_IDENTITIES: usize = 1024;

impl ClientIdentities {
    pub fn new(ca_file: Option<&Path>) -> ClientIdentities {
        ClientIdentities {
            ca_file: ca_file.map(Path::to_owned),
            list: Vec::new(),
        }
    }

    /// Register `name` presenting the pair in these PEM files; the id to dial with.
    /// A name registered twice keeps its first pair.
    pub fn add(&mut self, name: &str, cert: &Path, key: &Path) -> Result<ClientId, TlsFileError> {
        if let Some(id) = self.find(name) {
            return Ok(id);
        }
        if self.list.len() >= MAX_IDENTITIES {
            return Err(TlsFileError::BadKey {
                path: key.display().to_string(),
                reason: format!("more than {MAX_IDENTITIES} client certificates"),
            });
        }
        let pair = ServerCert::load(cert, key)?;
        let config = client(self.ca_file.as_deref(), Some(pair.clone()))?;
        let id = ClientId(self.list.len() as u16);
        self.list.push(ClientIdentity {
            name: name.to_owned(),
            cert: pair,
            config: Arc::new(config),
        });
        Ok(id)
    }

    pub fn find(&self, name: &str) -> Option<ClientId> {
        self.list
            .iter()
            .position(|i| i.name == name)
            .map(|p| ClientId(p as u16))
    }

    pub fn iter(&self) -> impl Iterator<Item = &ClientIdentity> {
        self.list.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Read every pair again (SIGHUP): the ones that load take effect for new
    /// handshakes; the failures (name, error) keep their pair in use.
    pub fn reload(&self) -> (usize, Vec<(String, TlsFileError)>) {
        let mut ok = 0;
        let mut failed = Vec::new();
        for i in &self.list {
            match i.cert.reload() {
                Ok(()) => ok += 1,
                Err(e) => failed.push((i.name.clone(), e)),
            }
        }
        (ok, failed)
    }
}

/// The identity name of a carrier trunk's outbound side.
pub fn trunk_identity(name: &str) -> String {
    format!("trunk:{name}")
}

/// Register each carrier trunk's `[trunk.outbound]` client certificate, if any, and
/// note it on the compiled trunk (`trunks` in the order of `written`).
pub fn register_trunks(
    ids: &mut ClientIdentities,
    written: &[super::trunk::TrunkConfig],
    trunks: &mut [super::trunk::Trunk],
) -> Result<(), (String, String)> {
    use super::trunk_outbound::TrunkRole;
    for (i, (w, t)) in written.iter().zip(trunks.iter_mut()).enumerate() {
        let (Some(o), TrunkRole::CarrierWithOutbound(c)) = (&w.outbound, &mut t.role) else {
            continue;
        };
        c.tls_client = register(
            ids,
            &trunk_identity(&t.name),
            &ClientPairKeys {
                prefix: &format!("trunk[{i}].outbound"),
                cert: o.tls_client_cert.as_deref(),
                key: o.tls_client_key.as_deref(),
                tls: is_tls_uri(&c.uri),
            },
        )?;
    }
    Ok(())
}

/// The `tls_client_cert` / `tls_client_key` pair of one table, as written.
pub struct ClientPairKeys<'a> {
    /// The table's key prefix (`transfer.destination[0]`, `route[2]`).
    pub prefix: &'a str,
    pub cert: Option<&'a str>,
    pub key: Option<&'a str>,
    /// The table's target goes over TLS (`sips:`, `;transport=tls`).
    pub tls: bool,
}

/// Check a pair and register it under `name`: `Ok(None)` when neither key is set;
/// `Err((key, problem))` names the key at fault.
pub fn register(
    ids: &mut ClientIdentities,
    name: &str,
    k: &ClientPairKeys<'_>,
) -> Result<Option<ClientId>, (String, String)> {
    let named = |which: &str| format!("{}.{which}", k.prefix);
    let (cert, keyf) = match (k.cert, k.key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err((
                named("tls_client_key"),
                "tls_client_cert needs its private key (PEM file)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                named("tls_client_cert"),
                "tls_client_key needs its certificate chain (PEM file)".into(),
            ))
        }
        (Some(c), Some(k)) => (c, k),
    };
    if !k.tls {
        return Err((
            named("tls_client_cert"),
            "a client certificate is presented over TLS only: the target must be sips: or ;transport=tls".into(),
        ));
    }
    ids.add(name, Path::new(cert), Path::new(keyf))
        .map(Some)
        .map_err(|e| {
            let at_key = match &e {
                TlsFileError::NoKey { .. } | TlsFileError::BadKey { .. } => "tls_client_key",
                TlsFileError::Missing { path }
                | TlsFileError::Unreadable { path, .. }
                | TlsFileError::NotPem { path, .. }
                    if path == keyf =>
                {
                    "tls_client_key"
                }
                _ => "tls_client_cert",
            };
            (named(at_key), e.to_string())
        })
}

/// Does this target go over TLS: `sips:`, or `;transport=tls`?
pub fn is_tls_uri(uri: &crate::sip::message::SipUri) -> bool {
    uri.scheme.eq_ignore_ascii_case("sips")
        || uri
            .transport()
            .is_some_and(|t| t.eq_ignore_ascii_case("tls"))
}

/// Register the client identity of every `[[transfer.destination]]` that has one,
/// under [`destination_identity`] of its name.
pub fn register_destinations(
    ids: &mut ClientIdentities,
    dests: &[crate::b2bua::transfer::DestinationConfig],
) -> Result<(), (String, String)> {
    for (i, d) in dests.iter().enumerate() {
        let tls = d
            .transport
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("tls"))
            || crate::sip::message::SipUri::parse(&d.uri).is_some_and(|u| is_tls_uri(&u));
        register(
            ids,
            &destination_identity(&d.name),
            &ClientPairKeys {
                prefix: &format!("transfer.destination[{i}]"),
                cert: d.tls_client_cert.as_deref(),
                key: d.tls_client_key.as_deref(),
                tls,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(tag: &str) -> (PathBuf, PathBuf) {
        let k = rcgen::KeyPair::generate().expect("key");
        let c = rcgen::CertificateParams::new(vec!["client.example".to_owned()])
            .expect("params")
            .self_signed(&k)
            .expect("cert");
        let dir = std::env::temp_dir().join(format!(
            "handoff-tls-client-unit-{tag}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cp, kp) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cp, c.pem()).expect("write");
        std::fs::write(&kp, k.serialize_pem()).expect("write");
        (cp, kp)
    }

    fn keys<'a>(cert: Option<&'a str>, key: Option<&'a str>, tls: bool) -> ClientPairKeys<'a> {
        ClientPairKeys {
            prefix: "transfer.destination[0]",
            cert,
            key,
            tls,
        }
    }

    #[test]
    fn a_pair_registers_once_by_name() {
        let (c, k) = files("once");
        let (c, k) = (c.display().to_string(), k.display().to_string());
        let mut ids = ClientIdentities::new(None);
        let a = register(&mut ids, "d:a", &keys(Some(&c), Some(&k), true))
            .expect("ok")
            .expect("id");
        let again = register(&mut ids, "d:a", &keys(Some(&c), Some(&k), true))
            .expect("ok")
            .expect("id");
        let b = register(&mut ids, "d:b", &keys(Some(&c), Some(&k), true))
            .expect("ok")
            .expect("id");
        assert_eq!(a, again);
        assert_ne!(a, b);
        assert_eq!(ids.find("d:b"), Some(b));
        assert_eq!(ids.find("d:c"), None);
        assert_eq!(ids.reload().0, 2);
    }

    #[test]
    fn neither_key_is_no_identity() {
        let mut ids = ClientIdentities::new(None);
        assert_eq!(register(&mut ids, "d", &keys(None, None, true)), Ok(None));
        assert!(ids.is_empty());
    }

    #[test]
    fn each_problem_names_its_key() {
        let ids = ClientIdentities::new(None);
        let err = |c, k, tls| {
            register(&mut ClientIdentities::new(None), "d", &keys(c, k, tls)).expect_err("bad")
        };
        assert_eq!(
            err(Some("c.pem"), None, true).0,
            "transfer.destination[0].tls_client_key"
        );
        assert_eq!(
            err(None, Some("k.pem"), true).0,
            "transfer.destination[0].tls_client_cert"
        );
        let (key, problem) = err(Some("c.pem"), Some("k.pem"), false);
        assert_eq!(key, "transfer.destination[0].tls_client_cert");
        assert!(problem.contains("over TLS only"), "{problem}");
        let (key, problem) = err(Some("/nonexistent/c.pem"), Some("/nonexistent/k.pem"), true);
        assert_eq!(
            (key.as_str(), problem.as_str()),
            (
                "transfer.destination[0].tls_client_cert",
                "/nonexistent/c.pem: no such file"
            )
        );
        let (c, _) = files("badkey");
        let c = c.display().to_string();
        let (key, problem) = err(Some(&c), Some("/nonexistent/k.pem"), true);
        assert_eq!(key, "transfer.destination[0].tls_client_key");
        assert!(problem.contains("no such file"), "{problem}");
        assert!(ids.is_empty());
    }
}
