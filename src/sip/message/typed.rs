//! Typed views of the headers handoff reads: Via, name-addr (From, To, Contact),
//! CSeq and URIs. rsip does the grammar of Via and sip:/sips: URIs; tel: URIs
//! (RFC 3966), which rsip 0.4 does not parse, are read here.

use super::Method;
use rand::Rng;
use std::fmt;
use std::net::IpAddr;

/// RFC 3261 8.1.1.7: branches of RFC 3261 elements start with this cookie.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// A fresh branch parameter, unique across space and time (RFC 3261 8.1.1.7).
pub fn generate_branch() -> String {
    let n: u128 = rand::thread_rng().gen();
    format!("{BRANCH_MAGIC_COOKIE}{n:032x}")
}

/// A fresh tag (RFC 3261 19.3: at least 32 bits of randomness).
pub fn generate_tag() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// A fresh Call-ID for a dialog we start: 128 random bits in 32 lowercase hex digits,
/// globally unique without a host part (RFC 3261 8.1.1.4).
pub fn generate_call_id() -> String {
    let n: u128 = rand::thread_rng().gen();
    format!("{n:032x}")
}

/// The top Via of a message.
#[derive(Debug, Clone)]
pub struct Via {
    inner: rsip::typed::Via,
    /// An IPv6 sent-by, held aside because rsip holds a placeholder name for it.
    v6: Option<std::net::Ipv6Addr>,
}

impl Via {
    pub fn parse(value: &str) -> Option<Via> {
        // RFC 3261 25.1: SEMI and EQUAL allow whitespace around them; rsip does not.
        let tight;
        let value = if value.contains([';', '=']) && value.contains([' ', '\t']) {
            tight = tighten_params(value);
            tight.as_str()
        } else {
            value
        };
        // RFC 3261 25.1: SLASH is SWS "/" SWS, and LWS may be any run of blanks.
        let spaced;
        let value = if needs_protocol_tightening(value) {
            spaced = tighten_protocol(value);
            spaced.as_str()
        } else {
            value
        };
        let (masked, v6) = mask_v6(value)?;
        let inner = rsip::typed::Via::try_from(rsip::headers::Via::from(masked)).ok()?;
        Some(Via { inner, v6 })
    }

    /// A Via for a request we send.
    pub fn ours(transport: &str, host: &str, port: u16, branch: &str) -> String {
        let host = bracket_v6(host);
        format!("SIP/2.0/{transport} {host}:{port};branch={branch};rport")
    }

    pub fn branch(&self) -> Option<&str> {
        self.inner.branch().map(|b| b.value())
    }

    pub fn transport(&self) -> String {
        self.inner.transport.to_string()
    }

    pub fn sent_by_host(&self) -> String {
        match self.v6 {
            Some(ip) => format!("[{ip}]"),
            None => self.inner.uri.host_with_port.host.to_string(),
        }
    }

    pub fn sent_by_port(&self) -> Option<u16> {
        self.inner.uri.host_with_port.port.map(|p| *p.value())
    }

    /// sent-by as "host:port" (port 0 when absent), for transaction matching.
    pub fn sent_by_key(&self) -> String {
        format!(
            "{}:{}",
            self.sent_by_host(),
            self.sent_by_port().unwrap_or(0)
        )
    }

    pub fn has_rport(&self) -> bool {
        self.inner.params.iter().any(|p| is_named(p, "rport"))
    }

    pub fn received(&self) -> Option<IpAddr> {
        self.inner.received().ok().flatten()
    }

    /// RFC 3581 4 and RFC 3261 18.2.1: note where the request really came from.
    /// `received` is added when the source differs from sent-by (always, when rport is
    /// present); an empty `rport` is filled with the source port.
    /// Returns whether anything was added.
    pub fn stamp_source(&mut self, source_ip: IpAddr, source_port: u16) -> bool {
        let rport = self.has_rport();
        let sent_by_is_source = self
            .sent_by_host()
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip == source_ip);
        if rport || !sent_by_is_source {
            self.inner
                .params
                .retain(|p| !matches!(p, rsip::Param::Received(_)));
            self.inner
                .params
                .push(rsip::Param::Received(rsip::param::Received::new(
                    source_ip.to_string(),
                )));
        }
        if rport {
            for p in self.inner.params.iter_mut() {
                if is_named(p, "rport") {
                    *p = rsip::Param::Other("rport".into(), Some(source_port.to_string().into()));
                }
            }
        }
        rport || !sent_by_is_source
    }

    /// Where a response to this Via goes on an unreliable transport (RFC 3261 18.2.2,
    /// RFC 3581 4): received (or sent-by) address, rport (or sent-by, or 5060) port.
    pub fn response_port(&self) -> u16 {
        for p in &self.inner.params {
            if let rsip::Param::Other(name, Some(v)) = p {
                if name.value().eq_ignore_ascii_case("rport") {
                    if let Ok(port) = v.value().parse() {
                        return port;
                    }
                }
            }
        }
        self.sent_by_port().unwrap_or(5060)
    }
}

/// Whether the sent-protocol and sent-by (before the first ';') have blanks other than
/// the one SP between them.
fn needs_protocol_tightening(value: &str) -> bool {
    let head = value.split(';').next().unwrap_or(value).trim();
    head.contains("/ ") || head.contains(" /") || head.contains("  ") || head.contains('\t')
}

/// `SIP  /  2.0 / UDP   host` as `SIP/2.0/UDP host`: blanks around '/' dropped, the
/// blanks before sent-by made one SP. Only the part before the first ';' is touched.
fn tighten_protocol(value: &str) -> String {
    let value = value.trim();
    let (head, params) = match value.find(';') {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    let mut out = String::with_capacity(value.len());
    for (i, part) in head.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let words: Vec<&str> = part.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
        out.push_str(&words.join(" "));
    }
    out.push_str(params);
    out
}

/// Drop whitespace around ';' and '=' (outside quoted strings).
fn tighten_params(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut quoted = false;
    let mut chars = value.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c == ';' || c == '=') {
            while out.ends_with([' ', '\t']) {
                out.pop();
            }
            out.push(c);
            while chars.peek().is_some_and(|n| *n == ' ' || *n == '\t') {
                chars.next();
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// rsip 0.4 cannot read an IPv6 reference (`[2001:db8::1]`) in a URI or Via: swap it
/// for a placeholder name rsip accepts, and hand back the address to put back.
fn mask_v6(s: &str) -> Option<(String, Option<std::net::Ipv6Addr>)> {
    let Some(open) = s.find('[') else {
        return Some((s.to_owned(), None));
    };
    let close = s[open..].find(']')? + open;
    let ip: std::net::Ipv6Addr = s[open + 1..close].parse().ok()?;
    let mut masked = String::with_capacity(s.len());
    masked.push_str(&s[..open]);
    masked.push_str(V6_PLACEHOLDER);
    masked.push_str(&s[close + 1..]);
    Some((masked, Some(ip)))
}

const V6_PLACEHOLDER: &str = "v6-literal.invalid";

fn is_named(p: &rsip::Param, name: &str) -> bool {
    matches!(p, rsip::Param::Other(n, _) if n.value().eq_ignore_ascii_case(name))
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.v6 {
            None => self.inner.fmt(f),
            Some(ip) => f.write_str(&self.inner.to_string().replacen(
                V6_PLACEHOLDER,
                &format!("[{ip}]"),
                1,
            )),
        }
    }
}

/// `[v6]` for an IPv6 literal so it can stand in a URI or Via.
pub fn bracket_v6(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        std::borrow::Cow::Owned(format!("[{host}]"))
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// CSeq: sequence number and method (RFC 3261 20.16: the number is below 2^31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Option<CSeq> {
        let mut it = value.split_ascii_whitespace();
        let seq = it.next()?.parse::<u32>().ok().filter(|n| *n < (1 << 31))?;
        let method = Method::parse(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        Some(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A SIP, SIPS or tel URI, parsed into the parts handoff needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters (`;name[=value]`) in order, names lowercased.
    pub params: Vec<(String, Option<String>)>,
    /// The URI as given.
    raw: String,
}

impl SipUri {
    pub fn parse(s: &str) -> Option<SipUri> {
        let s = s.trim();
        let (scheme, rest) = s.split_once(':')?;
        if scheme.eq_ignore_ascii_case("tel") {
            return Self::parse_tel(s, rest);
        }
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
            return None;
        }
        if s.bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"')
        {
            return None;
        }
        let (masked, v6) = mask_v6(s)?;
        let uri = rsip::Uri::try_from(masked.as_str()).ok()?;
        let user = uri.user().map(str::to_owned);
        let host = match v6 {
            Some(ip) => ip.to_string(),
            None => uri.host_with_port.host.to_string(),
        };
        if host.is_empty() {
            return None;
        }
        let port = uri.host_with_port.port.map(|p| *p.value());
        Some(SipUri {
            scheme: scheme.to_ascii_lowercase(),
            user,
            host,
            port,
            params: split_params(after_hostport(rest)),
            raw: s.to_owned(),
        })
    }

    /// RFC 3966: `tel:+1-415-555-1212;phone-context=...`; the number is the user part.
    fn parse_tel(s: &str, rest: &str) -> Option<SipUri> {
        let (number, params) = rest.split_once(';').unwrap_or((rest, ""));
        let ok = !number.is_empty()
            && number
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b"+-.()*#".contains(&b));
        if !ok {
            return None;
        }
        Some(SipUri {
            scheme: "tel".into(),
            user: Some(number.to_owned()),
            host: String::new(),
            port: None,
            params: split_params(params),
            raw: s.to_owned(),
        })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The transport the URI asks for (`;transport=`), lowercased.
    pub fn transport(&self) -> Option<String> {
        self.param("transport")
            .flatten()
            .map(|t| t.to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The part of a sip: URI after host[:port]: its parameters (headers after '?' dropped).
fn after_hostport(rest: &str) -> &str {
    let rest = rest.split('?').next().unwrap_or("");
    let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    hostpart.split_once(';').map_or("", |(_, p)| p)
}

fn split_params(s: &str) -> Vec<(String, Option<String>)> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().to_owned())),
            None => (p.trim().to_ascii_lowercase(), None),
        })
        .collect()
}

/// A name-addr or addr-spec with header parameters: From, To, Contact, Refer-To.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display_name: Option<String>,
    pub uri: SipUri,
    /// Header parameters (after the URI), names lowercased.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(value: &str) -> Option<NameAddr> {
        let value = value.trim();
        let (display_name, uri, params) = match value.find('<') {
            Some(lt) => {
                let display = value[..lt].trim();
                let gt = value[lt..].find('>')? + lt;
                let display_name = if display.is_empty() {
                    None
                } else {
                    Some(unquote(display)?)
                };
                let params = value[gt + 1..].trim_start();
                (display_name, &value[lt + 1..gt], params)
            }
            None => {
                // RFC 3261 20.10: without <>, every ';' parameter belongs to the header.
                let (uri, params) = match value.find(';') {
                    Some(i) => (&value[..i], &value[i..]),
                    None => (value, ""),
                };
                (None, uri, params)
            }
        };
        if !params.is_empty() && !params.starts_with(';') {
            return None;
        }
        Some(NameAddr {
            display_name,
            uri: SipUri::parse(uri)?,
            params: split_params(params),
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == "tag")
            .and_then(|(_, v)| v.as_deref())
    }

    /// The tag parameter of a From/To value, without a full parse (hot path).
    pub fn tag_of(value: &str) -> Option<&str> {
        let params = match value.rfind('>') {
            Some(gt) => &value[gt + 1..],
            None => value,
        };
        params.split(';').skip(1).find_map(|p| {
            let (n, v) = p.split_once('=')?;
            n.trim().eq_ignore_ascii_case("tag").then(|| v.trim())
        })
    }

    pub fn has_tag_param(value: &str) -> bool {
        Self::tag_of(value).is_some()
    }

    /// Format a name-addr. The display name is quoted and escaped; the caller makes sure
    /// it holds no control characters (it goes through `Message::push_checked` or came
    /// from a parsed header).
    pub fn format(display_name: Option<&str>, uri: &str, tag: Option<&str>) -> String {
        let mut s = String::with_capacity(uri.len() + 32);
        if let Some(d) = display_name.filter(|d| !d.is_empty()) {
            s.push('"');
            for c in d.chars() {
                if c == '"' || c == '\\' {
                    s.push('\\');
                }
                s.push(c);
            }
            s.push_str("\" ");
        }
        s.push('<');
        s.push_str(uri);
        s.push('>');
        if let Some(t) = tag {
            s.push_str(";tag=");
            s.push_str(t);
        }
        s
    }
}

/// A display name: a quoted string (escapes removed) or a run of tokens.
fn unquote(s: &str) -> Option<String> {
    if let Some(inner) = s.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                out.push(chars.next()?);
            } else {
                out.push(c);
            }
        }
        Some(out)
    } else {
        Some(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_reads_branch_sent_by_and_rport() {
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport").unwrap();
        assert_eq!(v.branch(), Some("z9hG4bKabc"));
        assert_eq!(v.sent_by_host(), "10.0.0.1");
        assert_eq!(v.sent_by_port(), Some(5070));
        assert!(v.has_rport());
        assert_eq!(v.transport(), "UDP");
    }

    #[test]
    fn via_with_ipv6_sent_by() {
        let v = Via::parse("SIP/2.0/TCP [2001:db8::7]:5070;branch=z9hG4bKv6;rport").unwrap();
        assert_eq!(v.sent_by_host(), "[2001:db8::7]");
        assert_eq!(v.sent_by_port(), Some(5070));
        let mut v = v;
        v.stamp_source("2001:db8::9".parse().unwrap(), 6000);
        let s = v.to_string();
        assert!(s.starts_with("SIP/2.0/TCP [2001:db8::7]:5070"), "{s}");
        assert!(s.contains("received=2001:db8::9"), "{s}");
    }

    #[test]
    fn via_with_blanks_around_slashes_parses() {
        // RFC 4475 3.1.1.1 (wsinv).
        let v = Via::parse("SIP  /   2.0 /UDP 10.0.0.1:5070;branch=z9hG4bKw").unwrap();
        assert_eq!(v.transport(), "UDP");
        assert_eq!(v.sent_by_key(), "10.0.0.1:5070");
        let v = Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9")
            .unwrap();
        assert_eq!(v.sent_by_host(), "spindle.example.com");
        assert_eq!(v.branch(), Some("z9hG4bK9"));
    }

    #[test]
    fn stamp_source_fills_rport_and_received() {
        let mut v = Via::parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport").unwrap();
        v.stamp_source("192.0.2.7".parse().unwrap(), 40000);
        let s = v.to_string();
        assert!(s.contains("received=192.0.2.7"), "{s}");
        assert!(s.contains("rport=40000"), "{s}");
        assert_eq!(v.response_port(), 40000);
    }

    #[test]
    fn stamp_source_without_rport_adds_received_only_when_different() {
        let mut v = Via::parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc").unwrap();
        v.stamp_source("10.0.0.1".parse().unwrap(), 5070);
        assert!(!v.to_string().contains("received"));
        v.stamp_source("192.0.2.7".parse().unwrap(), 5070);
        assert!(v.to_string().contains("received=192.0.2.7"));
        assert_eq!(v.response_port(), 5070);
    }

    #[test]
    fn cseq_parses_and_bounds() {
        assert_eq!(
            CSeq::parse("314159 INVITE"),
            Some(CSeq {
                seq: 314159,
                method: Method::Invite
            })
        );
        assert_eq!(CSeq::parse("2147483648 INVITE"), None);
        assert_eq!(CSeq::parse("x INVITE"), None);
        assert_eq!(CSeq::parse("1 INVITE extra"), None);
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            r#""Alice \"A\"" <sip:+14155551212@carrier.example;user=phone>;tag=abc"#,
        )
        .unwrap();
        assert_eq!(n.display_name.as_deref(), Some(r#"Alice "A""#));
        assert_eq!(n.uri.user.as_deref(), Some("+14155551212"));
        assert_eq!(n.uri.param("user"), Some(Some("phone")));
        assert_eq!(n.tag(), Some("abc"));
        let n = NameAddr::parse("sip:bob@example.com;tag=x").unwrap();
        assert_eq!(n.tag(), Some("x"));
        assert!(n.uri.params.is_empty());
        let n = NameAddr::parse("Bob Smith <tel:+1-415-555-1212>").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("Bob Smith"));
        assert_eq!(n.uri.scheme, "tel");
        assert!(NameAddr::parse("<sip:a@b").is_none());
        assert!(NameAddr::parse("<http://x>").is_none());
    }

    #[test]
    fn generated_call_ids_are_32_hex_digits_and_unique() {
        let ids: std::collections::HashSet<String> =
            (0..5000).map(|_| generate_call_id()).collect();
        assert_eq!(ids.len(), 5000);
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        }
    }

    #[test]
    fn tag_of_ignores_uri_params() {
        assert_eq!(NameAddr::tag_of("<sip:a@b;tag=uri>;tag=hdr"), Some("hdr"));
        assert_eq!(NameAddr::tag_of("<sip:a@b;tag=uri>"), None);
        assert_eq!(NameAddr::tag_of("sip:a@b;tag=t1"), Some("t1"));
    }

    #[test]
    fn sip_uri_parts() {
        let u = SipUri::parse("sip:ai@127.0.0.1:5080;transport=TCP").unwrap();
        assert_eq!(u.user.as_deref(), Some("ai"));
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, Some(5080));
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        let u = SipUri::parse("sip:[::1]:5060").unwrap();
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.host, "::1");
        let u = SipUri::parse("sip:ai@[2001:db8::1]:5070;transport=tcp").unwrap();
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        assert!(SipUri::parse("sip:a@[::zz]").is_none());
        assert!(SipUri::parse("mailto:x@y").is_none());
        assert!(SipUri::parse("sip:a b@c").is_none());
    }

    #[test]
    fn name_addr_format_escapes_display() {
        assert_eq!(
            NameAddr::format(Some(r#"A "B""#), "sip:x@y", Some("t")),
            r#""A \"B\"" <sip:x@y>;tag=t"#
        );
        assert_eq!(NameAddr::format(None, "sip:x@y", None), "<sip:x@y>");
    }

    #[test]
    fn generated_ids_are_distinct_and_carry_cookie() {
        let a = generate_branch();
        assert!(a.starts_with(BRANCH_MAGIC_COOKIE));
        assert_ne!(a, generate_branch());
        assert_ne!(generate_tag(), generate_tag());
    }
}
