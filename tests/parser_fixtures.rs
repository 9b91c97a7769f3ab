//! Every raw message in `sip-fixtures/` through the parser: `valid_*` must parse and
//! round-trip, `invalid_*` must be refused with an error (never a panic).

use bytes::Bytes;
use handoff::sip::message::{parse, Message, Method, ParseErrorKind};
use std::path::PathBuf;

fn fixture(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sip-fixtures")
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn parse_fixture(name: &str) -> Message {
    parse(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_valid_fixture_parses_and_round_trips() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sip-fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.starts_with("valid_") {
            continue;
        }
        seen += 1;
        let msg = parse_fixture(&name);
        let again = parse(msg.to_bytes()).unwrap_or_else(|e| panic!("{name} re-parse: {e}"));
        assert_eq!(again.start_line(), msg.start_line(), "{name}");
        assert_eq!(
            again.headers().len(),
            msg.headers().len() + usize::from(msg.header("Content-Length").is_none()),
            "{name}"
        );
        assert_eq!(again.body(), msg.body(), "{name}");
    }
    assert!(seen >= 8, "only {seen} valid fixtures");
}

#[test]
fn every_invalid_fixture_is_refused() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sip-fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("invalid_") {
            seen += 1;
            assert!(parse(fixture(&name)).is_err(), "{name} parsed");
        }
    }
    assert!(seen >= 8, "only {seen} invalid fixtures");
}

#[test]
fn compact_header_forms_are_expanded() {
    let m = parse_fixture("valid_compact_headers.sip");
    assert_eq!(m.call_id(), Some("compact@carrier.example"));
    assert_eq!(m.from_tag(), Some("c1"));
    assert_eq!(
        m.top_via()
            .and_then(|v| v.branch().map(str::to_owned))
            .as_deref(),
        Some("z9hG4bK-compact")
    );
    assert_eq!(m.header("Contact"), Some("<sip:alice@127.0.0.1:5070>"));
    assert_eq!(m.header("Supported"), Some("timer"));
    assert_eq!(m.header("Subject"), Some("compact forms"));
    assert_eq!(m.header("Event"), Some("refer"));
    assert_eq!(
        m.header("Refer-To"),
        Some("<sip:line@sub.zendesk.sip.twilio.com>")
    );
    assert_eq!(m.header("Session-Expires"), Some("1800"));
    assert_eq!(m.header("Content-Encoding"), Some("identity"));
    assert_eq!(m.header("Content-Type"), Some("application/sdp"));
    assert_eq!(&m.body()[..], b"v=0\n");
    let out = String::from_utf8(m.to_bytes().to_vec()).unwrap();
    assert!(
        out.contains("\r\nCall-ID: compact@carrier.example\r\n"),
        "{out}"
    );
}

#[test]
fn whitespace_before_colon_is_accepted() {
    let m = parse_fixture("valid_whitespace_before_colon.sip");
    assert_eq!(m.call_id(), Some("ws@127.0.0.1"));
    assert_eq!(m.cseq().map(|c| c.seq), Some(7));
    assert_eq!(m.from_tag(), Some("w1"));
}

#[test]
fn folded_header_lines_are_unfolded() {
    let m = parse_fixture("valid_folded_headers.sip");
    assert_eq!(
        m.top_via()
            .and_then(|v| v.branch().map(str::to_owned))
            .as_deref(),
        Some("z9hG4bK-fold")
    );
    assert_eq!(m.from_tag(), Some("f1"));
    assert_eq!(m.cseq().map(|c| c.method), Some(Method::Options));
    assert_eq!(m.header("Subject"), Some("a subject that goes on"));
}

#[test]
fn non_utf8_body_is_preserved_byte_for_byte() {
    let raw = fixture("valid_binary_body.sip");
    let m = parse(raw.clone()).unwrap();
    let body = &raw[raw.len() - 8..];
    assert_eq!(&m.body()[..], body);
    let out = m.to_bytes();
    assert_eq!(&out[out.len() - 8..], body);
}

#[test]
fn content_length_is_rewritten_from_the_actual_body() {
    let mut m = parse_fixture("valid_invite_basic.sip");
    m.set_body(Bytes::from_static(b"v=0\r\n"));
    let out = String::from_utf8(m.to_bytes().to_vec()).unwrap();
    assert!(
        out.contains("\r\nContent-Length: 5\r\n\r\nv=0\r\n"),
        "{out}"
    );
    assert_eq!(out.matches("Content-Length").count(), 1);
}

#[test]
fn ipv6_and_tel_fixtures_parse() {
    let m = parse_fixture("valid_ipv6_via.sip");
    assert_eq!(
        m.top_via().map(|v| v.sent_by_host()).as_deref(),
        Some("[::1]")
    );
    let m = parse_fixture("valid_tel_from.sip");
    assert_eq!(
        m.from_header().and_then(|f| f.uri.user),
        Some("+1-415-555-1212".into())
    );
}

#[test]
fn invalid_fixtures_name_their_problem_and_keep_a_partial_for_400() {
    let e = parse(fixture("invalid_missing_call_id.sip")).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::MissingHeader("Call-ID"));
    let e = parse(fixture("invalid_cseq_method_mismatch.sip")).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::CSeqMethodMismatch);
    assert!(e.partial().is_some());
    let e = parse(fixture("invalid_header_without_colon.sip")).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::BadHeaderLine);
    assert_eq!(e.partial().and_then(|m| m.cseq()).map(|c| c.seq), Some(1));
    let e = parse(fixture("invalid_bad_request_uri.sip")).unwrap_err();
    assert_eq!(e.status(), 416);
    let e = parse(fixture("invalid_version.sip")).unwrap_err();
    assert_eq!(e.status(), 505);
    let e = parse(fixture("invalid_bad_max_forwards.sip")).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::BadHeader("Max-Forwards"));
    let e = parse(fixture("invalid_garbage.sip")).unwrap_err();
    assert!(e.partial().is_none());
}
