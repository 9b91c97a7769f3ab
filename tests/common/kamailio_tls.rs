//! Kamailio with its TLS module (OpenSSL underneath) as an independent SIP/TLS peer:
//! a configuration written by the test, certificates from the test's CA written to
//! Kamailio's own temporary directory, random loopback ports, stopped by PID (see
//! [`Kamailio`]). One stateful relay with two sides:
//! - a request that arrives over UDP goes to handoff over TLS (Kamailio the TLS
//!   client, verifying handoff's certificate against `ca_list`);
//! - a request that arrives over TLS goes to the far UA over UDP (Kamailio the TLS
//!   server, optionally requiring a client certificate from the CA).
//!
//! Both sides record-route (double Record-Route across the transports), so in-dialog
//! requests of either party pass through Kamailio.
//!
//! Needs `kamailio` and `kamailio-tls-modules` (Debian): `scripts/install-test-deps.sh`.

use super::kamailio::{free_udp_and_tcp_port, Kamailio};
use super::tls::Leaf;
use std::net::SocketAddr;

/// Where Kamailio's TLS module lives (Debian's `kamailio-tls-modules`).
pub const TLS_MODULE: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so";

/// What a Kamailio TLS peer is made of.
pub struct KamTlsOpts<'a> {
    /// handoff's TLS listener: where requests arriving over UDP go.
    pub handoff_tls: Option<SocketAddr>,
    /// The far UA: where requests arriving over TLS go (over UDP).
    pub far_udp: Option<SocketAddr>,
    /// Kamailio's server certificate (chain) and key.
    pub server: &'a Leaf,
    /// The CAs Kamailio trusts, as PEM (to verify handoff as server and as client).
    pub ca_pem: &'a str,
    /// Kamailio's TLS server asks for and verifies a client certificate.
    pub verify_client: bool,
    /// The CAs a client certificate must chain to (default `ca_pem`).
    pub client_ca_pem: Option<&'a str>,
    /// Kamailio, as TLS client to handoff, presents this certificate.
    pub client_cert: Option<&'a Leaf>,
}

/// A running Kamailio TLS peer: its UDP address (where a UA sends to reach handoff)
/// and its TLS address (what handoff connects to).
pub struct KamTls {
    pub kam: Kamailio,
    pub udp: SocketAddr,
    pub tls: SocketAddr,
}

impl KamTls {
    pub fn start(o: &KamTlsOpts<'_>) -> KamTls {
        assert!(
            std::path::Path::new(TLS_MODULE).is_file(),
            "{TLS_MODULE} missing: run scripts/install-test-deps.sh (kamailio-tls-modules)"
        );
        let dir = std::env::temp_dir().join(format!(
            "handoff-kamtls-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write kamailio file");
            p.display().to_string()
        };
        let cert = write("server-cert.pem", &o.server.cert_pem);
        let key = write("server-key.pem", &o.server.key_pem);
        let ca = write("ca.pem", o.ca_pem);
        let client_ca = match o.client_ca_pem {
            Some(pem) => write("client-ca.pem", pem),
            None => ca.clone(),
        };
        let client_pair = o.client_cert.map(|l| {
            (
                write("client-cert.pem", &l.cert_pem),
                write("client-key.pem", &l.key_pem),
            )
        });
        let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_and_tcp_port()));
        let tls = SocketAddr::from(([127, 0, 0, 1], free_udp_and_tcp_port()));
        let verify = if o.verify_client { "yes" } else { "no" };
        let client_keys = client_pair.map_or(String::new(), |(c, k)| {
            format!("certificate = {c}\nprivate_key = {k}\n")
        });
        let tls_cfg = format!(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = {verify}\nrequire_certificate = {verify}\ncertificate = {cert}\nprivate_key = {key}\nca_list = {client_ca}\n\n\
             [client:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\nca_list = {ca}\n{client_keys}"
        );
        let tls_cfg_path = write("tls.cfg", &tls_cfg);
        let to_handoff = o
            .handoff_tls
            .map_or("sip:127.0.0.1:9;transport=tls".into(), |a| {
                format!("sip:{a};transport=tls")
            });
        let to_far = o
            .far_udp
            .map_or("sip:127.0.0.1:9".into(), |a| format!("sip:{a}"));
        let cfg = format!(
            r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
listen=udp:{udp}
listen=tls:{tls}
enable_tls=yes
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tls.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"
modparam("tls", "config", "{tls_cfg_path}")
modparam("tm", "fr_timer", 3000)

request_route {{
    if (is_method("OPTIONS") && $rU == $null) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{ t_relay(); }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ t_relay(); }}
        exit;
    }}
    record_route();
    if ($pr == "udp") {{
        $du = "{to_handoff}";
    }} else {{
        $du = "{to_far}";
    }}
    if (!t_relay()) {{
        sl_reply_error();
    }}
}}
"#
        );
        let cfg_path = dir.join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).expect("write kamailio.cfg");
        let kam = Kamailio::spawn(&cfg_path, dir, udp);
        KamTls { kam, udp, tls }
    }
}
