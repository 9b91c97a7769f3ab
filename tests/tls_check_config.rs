//! A missing or unreadable certificate, key or CA file stops `handoff check-config`
//! and `handoff run` with one line naming the key and the file (issue 14, item 4):
//! `sip.tls_key`, `sip.tls_ca_file`, a trunk's `tls_client_ca`, and the client
//! certificates of a destination and of a route (`tls_client_cert`,
//! `tls_client_key`), with their pairing and TLS-only rules. (`sip.tls_cert` is in
//! `tests/cli.rs`.)

mod common;

use common::cli::{assert_refused, ROUTE};
use common::tls::{handoff_files, loopback_leaf};

fn listener(cert: &str, key: &str) -> String {
    format!("[sip]\nlisten_udp = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\ntls_cert = {cert:?}\ntls_key = {key:?}\n")
}

fn real_cert() -> String {
    handoff_files().0.display().to_string()
}

fn real_key() -> String {
    handoff_files().1.display().to_string()
}

/// A directory where a file should be: it exists, and reading it fails.
fn a_directory(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("handoff-tlscc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir.display().to_string()
}

#[test]
fn missing_tls_key_names_sip_tls_key() {
    assert_refused(
        "tlscc-key",
        &format!("{}{ROUTE}", listener(&real_cert(), "/nonexistent/key.pem")),
        "key `sip.tls_key`: /nonexistent/key.pem: no such file",
    );
}

#[test]
fn unreadable_tls_key_names_sip_tls_key() {
    let dir = a_directory("key");
    assert_refused(
        "tlscc-key-dir",
        &format!("{}{ROUTE}", listener(&real_cert(), &dir)),
        &format!("key `sip.tls_key`: {dir}: cannot read"),
    );
}

#[test]
fn missing_or_unreadable_tls_ca_file_names_sip_tls_ca_file() {
    assert_refused(
        "tlscc-ca",
        &format!("[sip]\ntls_ca_file = \"/nonexistent/ca.pem\"\n{ROUTE}"),
        "key `sip.tls_ca_file`: /nonexistent/ca.pem: no such file",
    );
    let dir = a_directory("ca");
    assert_refused(
        "tlscc-ca-dir",
        &format!("[sip]\ntls_ca_file = {dir:?}\n{ROUTE}"),
        &format!("key `sip.tls_ca_file`: {dir}: cannot read"),
    );
}

#[test]
fn missing_trunk_tls_client_ca_names_the_trunk_key() {
    assert_refused(
        "tlscc-trunk",
        &format!(
            "{}\n[[trunk]]\nname = \"carrier\"\nsources = [\"127.0.0.1\"]\ntls_client_ca = \"/nonexistent/clients.pem\"\n\n{ROUTE}",
            listener(&real_cert(), &real_key())
        ),
        "key `trunk[0].tls_client_ca`: /nonexistent/clients.pem: no such file",
    );
}

fn destination(keys: &str) -> String {
    format!("[transfer]\ndestination = [{{ name = \"zendesk\", uri = \"sips:support@sip.example.com\"{keys} }}]\n{ROUTE}")
}

#[test]
fn missing_destination_client_certificate_or_key_names_its_key() {
    assert_refused(
        "tlscc-dest-cert",
        &destination(
            ", tls_client_cert = \"/nonexistent/c.pem\", tls_client_key = \"/nonexistent/k.pem\"",
        ),
        "key `transfer.destination[0].tls_client_cert`: /nonexistent/c.pem: no such file",
    );
    assert_refused(
        "tlscc-dest-key",
        &destination(&format!(
            ", tls_client_cert = {:?}, tls_client_key = \"/nonexistent/k.pem\"",
            real_cert()
        )),
        "key `transfer.destination[0].tls_client_key`: /nonexistent/k.pem: no such file",
    );
    assert_refused(
        "tlscc-dest-half",
        &destination(&format!(", tls_client_cert = {:?}", real_cert())),
        "key `transfer.destination[0].tls_client_key`",
    );
}

#[test]
fn a_destination_key_of_another_certificate_is_refused() {
    let other = loopback_leaf().clone();
    let stranger = common::tls::TestCa::new("other").leaf(&["x.example"]);
    let (_, other_key) = stranger.write("tlscc-other");
    let (cert, _) = other.write("tlscc-mine");
    assert_refused(
        "tlscc-mismatch",
        &destination(&format!(
            ", tls_client_cert = {:?}, tls_client_key = {:?}",
            cert.display().to_string(),
            other_key.display().to_string()
        )),
        "does not match the certificate",
    );
}

#[test]
fn route_client_certificate_needs_its_key_and_a_tls_target() {
    let route = |uri: &str, keys: &str| {
        format!("[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"{uri}\"\n{keys}")
    };
    assert_refused(
        "tlscc-route-half",
        &route(
            "sips:ai@127.0.0.1:5081",
            &format!("tls_client_cert = {:?}\n", real_cert()),
        ),
        "key `route[0].tls_client_key`",
    );
    assert_refused(
        "tlscc-route-plain",
        &route(
            "sip:ai@127.0.0.1:5080",
            &format!(
                "tls_client_cert = {:?}\ntls_client_key = {:?}\n",
                real_cert(),
                real_key()
            ),
        ),
        "key `route[0].tls_client_cert`: a client certificate is presented over TLS only",
    );
    assert_refused(
        "tlscc-route-missing",
        &route(
            "sip:ai@127.0.0.1:5081;transport=tls",
            "tls_client_cert = \"/nonexistent/c.pem\"\ntls_client_key = \"/nonexistent/k.pem\"\n",
        ),
        "key `route[0].tls_client_cert`: /nonexistent/c.pem: no such file",
    );
}

/// A carrier trunk's outbound side (issue 15) presents its own client certificate
/// over TLS only, as a whole pair: `trunk[i].outbound.tls_client_*` is checked as a
/// destination's is.
#[test]
fn trunk_outbound_client_certificate_needs_its_key_a_tls_uri_and_a_file() {
    let trunk = |uri: &str, keys: &str| {
        format!("[[trunk]]\nname = \"carrier\"\nsources = [\"127.0.0.1\"]\n[trunk.outbound]\nuri = \"{uri}\"\n{keys}\n{ROUTE}")
    };
    assert_refused(
        "tlscc-trunk-half",
        &trunk(
            "sips:sip.carrier.example",
            &format!("tls_client_cert = {:?}\n", real_cert()),
        ),
        "key `trunk[0].outbound.tls_client_key`",
    );
    assert_refused(
        "tlscc-trunk-plain",
        &trunk(
            "sip:sip.carrier.example",
            &format!(
                "tls_client_cert = {:?}\ntls_client_key = {:?}\n",
                real_cert(),
                real_key()
            ),
        ),
        "key `trunk[0].outbound.tls_client_cert`",
    );
    assert_refused(
        "tlscc-trunk-missing",
        &trunk(
            "sip:sip.carrier.example;transport=tls",
            "tls_client_cert = \"/nonexistent/c.pem\"\ntls_client_key = \"/nonexistent/k.pem\"\n",
        ),
        "key `trunk[0].outbound.tls_client_cert`: /nonexistent/c.pem: no such file",
    );
}
