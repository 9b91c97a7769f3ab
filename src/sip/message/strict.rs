//! The strict checks of a parsed message: what RFC 3261 7.3.1 and 25 forbid and the
//! RFC 4475 torture messages probe (repeated single-valued headers, control characters,
//! broken display names, malformed Request-URIs). Pure functions over a message; each
//! failure is a [`ParseErrorKind`] whose reason phrase names the problem.
//!
//! They run on every message, so each is one pass over bytes already in cache.

use super::headers::HeaderName;
use super::parse::ParseErrorKind;
use super::Message;

/// Headers that must appear at most once (RFC 3261 7.3.1: only list headers repeat).
const SINGLE: [&str; 6] = [
    "Content-Length",
    "Call-ID",
    "From",
    "To",
    "CSeq",
    "Max-Forwards",
];

/// Headers whose value is a name-addr with a display name handoff reads or forwards.
const NAME_ADDR: [&str; 2] = ["From", "To"];

/// A single-valued header given twice. Identical copies are refused as well: only list
/// headers may repeat, and a peer that repeats one is not one to guess for.
pub(super) fn check_repeated(msg: &Message) -> Result<(), ParseErrorKind> {
    let mut first: [Option<&str>; SINGLE.len()] = [None; SINGLE.len()];
    for h in msg.headers() {
        let Some(i) = SINGLE.iter().position(|n| h.name().is(n)) else {
            continue;
        };
        let value = h.value().trim();
        match first[i] {
            None => first[i] = Some(value),
            Some(seen) => {
                return Err(ParseErrorKind::Repeated {
                    header: SINGLE[i],
                    conflicting: seen != value,
                })
            }
        }
        // Two Call-IDs on one line (the word grammar has no comma).
        if i == 1 && value.contains(',') {
            return Err(ParseErrorKind::Repeated {
                header: "Call-ID",
                conflicting: true,
            });
        }
    }
    Ok(())
}

/// Control characters, display names and empty parameters, header by header.
pub(super) fn check_values(msg: &Message) -> Result<(), ParseErrorKind> {
    for h in msg.headers() {
        let name = h.name();
        let value = h.value();
        // Where control characters are looked for: past a quoted display name, whose
        // quoted-pairs may escape them.
        let mut rest = value;
        if NAME_ADDR.iter().any(|n| name.is(n)) {
            let display_end = check_name_addr(value, canonical(name))?;
            if !params_well_formed(value) {
                return Err(ParseErrorKind::BadHeader(canonical(name)));
            }
            rest = &value[display_end..];
        } else if (name.is("Via") || name.is("Contact")) && !params_well_formed(value) {
            return Err(ParseErrorKind::BadHeader(canonical(name)));
        }
        if super::check_value(rest).is_err() {
            return Err(ParseErrorKind::ControlCharacter(short_name(name)));
        }
    }
    Ok(())
}

/// RFC 3261 25.1 CTL, less HTAB (allowed in LWS).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// The canonical spelling of the few names [`check_values`] checks the grammar of.
fn canonical(name: &HeaderName) -> &'static str {
    ["From", "To", "Via", "Contact"]
        .into_iter()
        .find(|n| name.is(n))
        .unwrap_or("header")
}

/// A header name for a reason phrase: a token (no CR, LF or space), bounded.
fn short_name(name: &HeaderName) -> String {
    name.as_str().chars().take(32).collect()
}

/// A From or To value: the display name, if any, is a quoted string with no bare CR, LF
/// or NUL (quoted-pair may escape anything but CR and LF), or a run of tokens; the URI
/// in `<>` has no space next to its brackets (RFC 4475 3.1.2.14). Returns the offset
/// just past a quoted display name (0 when there is none).
fn check_name_addr(value: &str, header: &'static str) -> Result<usize, ParseErrorKind> {
    let mut display_end = 0;
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    if bytes.get(i) == Some(&b'"') {
        i += 1;
        loop {
            match bytes.get(i) {
                None => return Err(ParseErrorKind::BadDisplayName),
                Some(b'"') => {
                    display_end = i + 1;
                    break;
                }
                Some(b'\\') => match bytes.get(i + 1) {
                    None | Some(b'\r') | Some(b'\n') => return Err(ParseErrorKind::BadDisplayName),
                    Some(_) => i += 2,
                },
                Some(b) if is_ctl(*b) => return Err(ParseErrorKind::BadDisplayName),
                Some(_) => i += 1,
            }
        }
    } else if let Some(lt) = value.find('<') {
        // Unquoted: tokens and LWS only (UTF-8 beyond ASCII tolerated: carriers send it).
        let ok = value[..lt]
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b >= 0x80 || super::is_token_char(b));
        if !ok {
            return Err(ParseErrorKind::BadDisplayName);
        }
    }
    if let (Some(lt), Some(gt)) = (value.rfind('<'), value.rfind('>')) {
        let inner = value.as_bytes();
        let spaced = |b: Option<&u8>| matches!(b, Some(b' ') | Some(b'\t'));
        if lt < gt && (spaced(inner.get(lt + 1)) || spaced(inner.get(gt.wrapping_sub(1)))) {
            return Err(ParseErrorKind::BadHeader(header));
        }
    }
    Ok(display_end)
}

/// Outside quotes and `<>`: every `;` is followed by a parameter name and every `,` by
/// another value (RFC 4475 3.1.2.1: `;;,;,,` is malformed).
fn params_well_formed(value: &str) -> bool {
    let bytes = value.as_bytes();
    super::headers::top_level(value).all(|(i, b)| {
        if b != b';' && b != b',' {
            return true;
        }
        let next = bytes[i + 1..].iter().find(|c| !matches!(c, b' ' | b'\t'));
        match (b, next) {
            (b';', Some(c)) => super::is_token_char(*c),
            (b',', Some(c)) => *c != b',' && *c != b';',
            _ => false,
        }
    })
}

/// Whether a header value ends inside a quoted string (escapes honoured).
pub(super) fn has_open_quote(value: &str) -> bool {
    if !value.contains('"') {
        return false;
    }
    let (mut quoted, mut escaped) = (false, false);
    for b in value.bytes() {
        if escaped {
            escaped = false;
        } else if b == b'\\' && quoted {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        }
    }
    quoted
}

/// The error for a header line cut inside a quoted string.
pub(super) fn open_quote_error(name: &HeaderName) -> ParseErrorKind {
    if NAME_ADDR.iter().any(|n| name.is(n)) || name.is("Contact") {
        ParseErrorKind::BadDisplayName
    } else {
        ParseErrorKind::BadHeaderLine
    }
}

/// What `SipUri::parse` does not refuse: a Request-URI of a sip: or sips: URI carrying
/// headers (RFC 3261 19.1.5 forbids them there; RFC 4475 3.1.2.11).
pub(super) fn check_request_uri(uri: &str) -> Result<(), ParseErrorKind> {
    let is_sip = uri
        .split_once(':')
        .is_some_and(|(s, _)| s.eq_ignore_ascii_case("sip") || s.eq_ignore_ascii_case("sips"));
    if is_sip {
        let host_part = uri.rsplit_once('@').map_or(uri, |(_, h)| h);
        if host_part.contains('?') {
            return Err(ParseErrorKind::BadRequestUri);
        }
    }
    Ok(())
}

/// Why a Request-URI `SipUri::parse` refused is refused: a well-formed scheme handoff
/// does not serve gets 416 (RFC 3261 8.2.2.1), anything else 400 (`<sip:...>`,
/// RFC 4475 3.1.2.7).
pub(super) fn request_uri_error(uri: &str) -> ParseErrorKind {
    let scheme = uri.split_once(':').map(|(s, _)| s).unwrap_or("");
    let known = ["sip", "sips", "tel"]
        .iter()
        .any(|k| scheme.eq_ignore_ascii_case(k));
    // RFC 3986 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    let well_formed = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if well_formed && !known {
        ParseErrorKind::UnsupportedUriScheme
    } else {
        ParseErrorKind::BadRequestUri
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;
    use bytes::Bytes;

    const BASIC: &str = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK1\r\nFrom: \"Bob\" <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    fn kind(s: &str) -> ParseErrorKind {
        match parse(Bytes::copy_from_slice(s.as_bytes())) {
            Ok(_) => panic!("parsed: {s:?}"),
            Err(e) => {
                assert!(e.partial().is_some(), "no partial for {s:?}");
                e.kind
            }
        }
    }

    #[test]
    fn basic_parses() {
        assert!(parse(Bytes::from_static(BASIC.as_bytes())).is_ok());
    }

    #[test]
    fn conflicting_content_length_is_named() {
        let k = kind(&BASIC.replace("Content-Length: 0\r\n", "Content-Length: 0\r\nl: 4\r\n"));
        assert_eq!(k.reason(), "Conflicting Content-Length");
        let k = kind(&BASIC.replace("Content-Length: 0\r\n", "Content-Length: 0\r\nl: 0\r\n"));
        assert_eq!(k.reason(), "Multiple Content-Length");
    }

    #[test]
    fn signed_or_negative_content_length_is_refused() {
        for v in ["+0", "-0", "-999", "0x0"] {
            let k = kind(&BASIC.replace("Content-Length: 0", &format!("Content-Length: {v}")));
            assert_eq!(k.reason(), "Bad Content-Length", "{v}");
        }
    }

    #[test]
    fn repeated_call_id_from_to_cseq_are_refused() {
        for (line, name) in [
            ("Call-ID: other\r\n", "Call-ID"),
            ("i: c1\r\n", "Call-ID"),
            ("From: <sip:c@d>;tag=2\r\n", "From"),
            ("t: <sip:a@127.0.0.1>\r\n", "To"),
            ("CSeq: 2 OPTIONS\r\n", "CSeq"),
            ("Max-Forwards: 69\r\n", "Max-Forwards"),
        ] {
            let k = kind(&BASIC.replace("\r\n\r\n", &format!("\r\n{line}\r\n")));
            assert_eq!(k.reason(), format!("Multiple {name}"), "{line:?}");
        }
        let k = kind(&BASIC.replace("Call-ID: c1", "Call-ID: c1, c2"));
        assert_eq!(k.reason(), "Multiple Call-ID");
    }

    #[test]
    fn bare_cr_lf_nul_in_display_name_are_refused() {
        for bad in ["B\rob", "B\0ob", "B\x07ob"] {
            let k = kind(&BASIC.replace("\"Bob\"", &format!("\"{bad}\"")));
            assert_eq!(k, ParseErrorKind::BadDisplayName, "{bad:?}");
            assert_eq!(k.reason(), "Bad Display Name");
        }
        // A bare LF cuts the line inside the quotes.
        let k = kind(&BASIC.replace("\"Bob\"", "\"B\nob\""));
        assert_eq!(k, ParseErrorKind::BadDisplayName);
        // Escaped CR is not a quoted-pair either.
        let k = kind(&BASIC.replace("\"Bob\"", "\"B\\\rob\""));
        assert_eq!(k, ParseErrorKind::BadDisplayName);
    }

    #[test]
    fn escaped_nul_in_display_name_is_valid() {
        // RFC 4475 3.1.1.2: quoted-pair may escape NUL, BEL, DEL.
        let ok = BASIC.replace("\"Bob\"", "\"NUL:\\\0 DEL:\\\x7f\"");
        assert!(parse(Bytes::from(ok)).is_ok());
    }

    #[test]
    fn unterminated_and_non_token_display_names_are_refused() {
        let k = kind(&BASIC.replace("To: <sip:a@127.0.0.1>", "To: \"Mr J <sip:a@127.0.0.1>"));
        assert_eq!(k, ParseErrorKind::BadDisplayName);
        let k = kind(&BASIC.replace("\"Bob\"", "Bell, Alexander"));
        assert_eq!(k, ParseErrorKind::BadDisplayName);
        assert!(parse(Bytes::from(BASIC.replace("\"Bob\"", "caller"))).is_ok());
        assert!(parse(Bytes::from(BASIC.replace("\"Bob\" <", "caller<"))).is_ok());
    }

    #[test]
    fn control_character_outside_a_display_name_is_named() {
        let k = kind(&BASIC.replace("\r\n\r\n", "\r\nSubject: a\rb\r\n\r\n"));
        assert_eq!(k.reason(), "Control Character in Subject");
    }

    #[test]
    fn request_uri_with_spaces_is_400_with_headers_kept() {
        let e = parse(Bytes::from(
            BASIC.replace("sip:a@127.0.0.1 SIP", "sip:a @127.0.0.1; lr SIP"),
        ))
        .unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadRequestUri);
        assert_eq!(e.status(), 400);
        assert_eq!(e.kind.reason(), "Bad Request-URI");
        assert_eq!(e.partial().and_then(|m| m.call_id()), Some("c1"));
    }

    #[test]
    fn extra_spaces_in_request_line_are_400() {
        let k = kind(&BASIC.replace("OPTIONS sip:a@127.0.0.1", "OPTIONS  sip:a@127.0.0.1"));
        assert_eq!(k.reason(), "Bad Request-Line");
        let k = kind(&BASIC.replace("SIP/2.0\r\nVia", "SIP/2.0 \r\nVia"));
        assert_eq!(k.reason(), "Bad Request-Line");
    }

    #[test]
    fn request_uri_schemes_and_forms() {
        assert_eq!(
            request_uri_error("http://x/"),
            ParseErrorKind::UnsupportedUriScheme
        );
        assert_eq!(
            request_uri_error("soap.beep://h"),
            ParseErrorKind::UnsupportedUriScheme
        );
        assert_eq!(
            request_uri_error("<sip:a@b>"),
            ParseErrorKind::BadRequestUri
        );
        assert_eq!(request_uri_error("sip:"), ParseErrorKind::BadRequestUri);
        let k = kind(&BASIC.replace("sip:a@127.0.0.1 SIP", "<sip:a@127.0.0.1> SIP"));
        assert_eq!(k, ParseErrorKind::BadRequestUri);
        let k = kind(&BASIC.replace(
            "sip:a@127.0.0.1 SIP",
            "sip:a@127.0.0.1?Route=%3Csip:x%3E SIP",
        ));
        assert_eq!(k, ParseErrorKind::BadRequestUri);
        // A '?' in the user part is not a header.
        assert!(check_request_uri("sip:a?b@h").is_ok());
    }

    #[test]
    fn empty_parameters_are_refused() {
        let k = kind(&BASIC.replace("branch=z9hG4bK1", "branch=z9hG4bK1;;,;,,"));
        assert_eq!(k.reason(), "Bad Via");
        let k = kind(&BASIC.replace("\r\n\r\n", "\r\nContact: \"J\" <sip:j@h>;;;;\r\n\r\n"));
        assert_eq!(k.reason(), "Bad Contact");
        assert!(params_well_formed(
            "SIP/2.0/UDP h ; branch = x , SIP/2.0/TCP g"
        ));
        assert!(params_well_formed("\"a;;b\" <sip:x;lr>;tag=1"));
    }

    #[test]
    fn spaces_inside_angle_brackets_are_refused() {
        let k = kind(&BASIC.replace("<sip:a@127.0.0.1>", "< sip:a@127.0.0.1 >"));
        assert!(matches!(k, ParseErrorKind::BadHeader(_)), "{k:?}");
    }

    /// The strict checks' share of a parse: `cargo test --release --lib -- --ignored
    /// --nocapture strict_checks_cost` (a debug build gives the ratio only roughly).
    #[test]
    #[ignore]
    fn strict_checks_cost() {
        let raw = Bytes::from_static(include_bytes!(
            "../../../sip-fixtures/valid_invite_basic.sip"
        ));
        let msg = parse(raw.clone()).expect("parses");
        let n = 100_000u32;
        for _ in 0..3 {
            let start = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(parse(std::hint::black_box(raw.clone())).is_ok());
            }
            let whole = start.elapsed() / n;
            let start = std::time::Instant::now();
            for _ in 0..n {
                let m = std::hint::black_box(&msg);
                std::hint::black_box(check_repeated(m).is_ok() && check_values(m).is_ok());
                std::hint::black_box(check_request_uri(m.request_uri().unwrap_or("")).is_ok());
            }
            let strict = start.elapsed() / n;
            println!(
                "parse: {whole:?} per message, of which strict checks {strict:?} ({:.1}%)",
                strict.as_nanos() as f64 * 100.0 / whole.as_nanos() as f64
            );
        }
    }
}
