//! Which transfer targets may be dialled: `[transfer] allow` patterns and the named
//! `[[transfer.destination]]`s, compiled once. Anything else is refused (403, nothing
//! dialled): handoff must not become an open relay into internal addresses.

use super::refer_to::ReferTarget;
use super::settings::DEFAULT_CODECS;
use crate::config::Secret;
use crate::sip::auth::DigestCredentials;
use crate::sip::message::SipUri;
use crate::sip::transport::Transport;
use std::net::IpAddr;

/// How a destination is reached, which decides the ticket headers: only a plain SIP
/// URI may carry them; `tel:` and `user=phone` targets go out through a carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    Sip,
    Tel,
    /// A sip: URI with `user=phone` (RFC 3261 19.1.1): a telephone number.
    SipUserPhone,
}

/// Digest credentials for a destination that challenges (RFC 8760).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    /// Borrowed for answering a challenge ([`crate::sip::auth`]).
    pub fn digest(&self) -> DigestCredentials<'_> {
        DigestCredentials {
            username: &self.username,
            password: self.password.expose(),
        }
    }
}

/// A transfer target that passed the allow-list, with what dialling it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The `[[transfer.destination]]` name when the target is one.
    pub name: Option<String>,
    /// The URI to invite, without embedded headers. For a named destination this is
    /// the configured URI (which the target is equivalent to).
    pub uri: SipUri,
    pub kind: DestinationKind,
    /// Codec names for the SDP offer filter, in order of preference.
    pub codecs: Vec<String>,
    pub credentials: Option<Credentials>,
    /// The configured transport, else the URI's `transport=`; None means UDP/default.
    pub transport: Option<Transport>,
    /// Which headers go on the INVITE besides the session's, and where.
    pub contract: std::sync::Arc<super::contract::Contract>,
    /// A completed transfer here leaves a private note on the session's ticket
    /// (`ticket_note`; default: for Zendesk SIP-IN hosts only).
    pub ticket_note: bool,
    /// `srtp` of a named destination; `off` for a target an allow pattern let in.
    pub srtp: crate::config::srtp::SrtpPolicy,
}

impl Destination {
    /// Reached over TLS: a `sips:` URI, or a `sip:` one over `tls`.
    pub fn is_secure(&self) -> bool {
        self.uri.scheme == "sips" || self.transport == Some(Transport::Tls)
    }

    /// May a redirect from this destination go to `next`? Never from TLS to the clear
    /// (RFC 3261 8.1.3.4 leaves it to the client; handoff has no user to ask).
    pub fn may_redirect_to(&self, next: &Destination) -> bool {
        !self.is_secure() || next.is_secure()
    }
}

/// Why a target is not dialled; the caller answers the REFER with 403 either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("target matches no [transfer] allow pattern or destination")]
    NotAllowed,
    /// `maddr` would send the request to another address than the checked host.
    #[error("target has a maddr parameter")]
    Maddr,
    #[error("target transport {0:?} is not udp, tcp or tls (sips: only tls)")]
    Transport(String),
}

/// One compiled `[transfer] allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pattern {
    /// `*.example.com`: one or more labels, then this suffix (lowercase, no dot first).
    Wildcard(String),
    /// An exact host name or IP address, with an optional port.
    Host { host: HostName, port: Option<u16> },
    /// `sip:line@host`: an exact URI (RFC 3261 19.1.4 equivalence).
    Uri(SipUri),
    /// `tel:+4420*` (prefix) or `tel:+442079460000` (exact), visual separators removed.
    Tel { number: String, prefix: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostName {
    Ip(IpAddr),
    /// Lowercase, without a trailing dot.
    Name(String),
}

impl HostName {
    fn of(host: &str) -> HostName {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => HostName::Ip(ip),
            Err(_) => HostName::Name(normal_host(host)),
        }
    }
}

impl Pattern {
    /// Compile one allow entry; the error says what is wrong with it (the caller adds
    /// the key).
    pub(super) fn parse(s: &str) -> Result<Pattern, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty pattern".into());
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("tel:") {
            return parse_tel_pattern(s);
        }
        if lower.starts_with("sip:") || lower.starts_with("sips:") {
            if s.contains('*') {
                return Err(format!(
                    "{s:?}: a sip: URI pattern is exact; use \"*.domain\" for a wildcard"
                ));
            }
            if s.contains('?') {
                return Err(format!("{s:?}: a sip: URI pattern cannot carry headers"));
            }
            let uri = SipUri::parse(s)
                .ok_or_else(|| format!("{s:?} is not a valid sip: or sips: URI"))?;
            check_uri_transport(&uri).map_err(|e| format!("{s:?}: {e}"))?;
            if uri.param("maddr").is_some() {
                return Err(format!("{s:?}: maddr is not allowed"));
            }
            return Ok(Pattern::Uri(uri));
        }
        if let Some(suffix) = s.strip_prefix("*.") {
            let suffix = normal_host(suffix);
            if !is_dns_name(&suffix) {
                return Err(format!(
                    "{s:?}: {suffix:?} after \"*.\" is not a domain name"
                ));
            }
            if !suffix.contains('.') {
                return Err(format!(
                    "{s:?} would allow a whole top-level domain: name at least two labels (\"*.example.com\")"
                ));
            }
            if is_local_name(&suffix) {
                return Err(format!("{s:?}: localhost names cannot be wildcarded"));
            }
            if ends_in_digits(&suffix) {
                return Err(format!(
                    "{s:?}: a name ending in a numeric label reads as an IP address"
                ));
            }
            return Ok(Pattern::Wildcard(suffix));
        }
        if s.contains('*') {
            return Err(format!(
                "{s:?}: \"*\" is only allowed as a leading \"*.\" label or at the end of a tel: pattern"
            ));
        }
        let (host, port) = split_host_port(s).ok_or_else(|| {
            format!("{s:?} is not a host name, IP address, \"*.domain\", sip: URI or tel: pattern")
        })?;
        Ok(Pattern::Host {
            host: HostName::of(host),
            port,
        })
    }

    fn matches(&self, uri: &SipUri) -> bool {
        match self {
            Pattern::Tel { number, prefix } => {
                uri.scheme == "tel"
                    && tel_number(uri).is_some_and(|n| {
                        if *prefix {
                            n.starts_with(number.as_str())
                        } else {
                            n == *number
                        }
                    })
            }
            // A host allowed over sip: is allowed over sips: too (TLS to the same host).
            _ if uri.scheme != "sip" && uri.scheme != "sips" => false,
            Pattern::Wildcard(suffix) => wildcard_matches(suffix, &uri.host),
            Pattern::Host { host, port } => {
                HostName::of(&uri.host) == *host && port.is_none_or(|p| uri.port == Some(p))
            }
            Pattern::Uri(p) => uri_equivalent(p, uri),
        }
    }
}

fn parse_tel_pattern(s: &str) -> Result<Pattern, String> {
    let body = &s["tel:".len()..];
    let (digits, prefix) = match body.strip_suffix('*') {
        Some(d) => (d, true),
        None => (body, false),
    };
    let number: String = digits
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    let (plus, rest) = match number.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, number.as_str()),
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) || (!prefix && rest.is_empty()) {
        return Err(format!(
            "{s:?} is not a tel: pattern such as \"tel:+*\", \"tel:+4420*\" or \"tel:+442079460000\""
        ));
    }
    if !plus && !prefix {
        return Err(format!("{s:?}: an exact tel: number must be global (+...)"));
    }
    Ok(Pattern::Tel { number, prefix })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        return Some((v6, port));
    }
    if s.parse::<IpAddr>().is_ok() {
        return Some((s, None));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (s, None),
    };
    let ok = host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(&normal_host(host));
    ok.then_some((host, port))
}

/// Lowercase, one trailing dot (the DNS root) removed.
fn normal_host(host: &str) -> String {
    let h = host.strip_suffix('.').unwrap_or(host);
    h.to_ascii_lowercase()
}

/// RFC 1035 / 1123: labels of 1-63 letters, digits and inner hyphens, 253 bytes at most.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A last label of digits only: resolvers may read the name as an IPv4 address
/// (`127.1`), and no top-level domain is numeric.
fn ends_in_digits(host: &str) -> bool {
    host.rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// RFC 6761 6.3: `localhost` and every name under it are loopback.
fn is_local_name(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// A wildcard never matches an IP literal, a localhost name, or a name without a dot:
/// those reach internal addresses and must be listed exactly.
fn wildcard_matches(suffix: &str, host: &str) -> bool {
    if matches!(HostName::of(host), HostName::Ip(_)) {
        return false;
    }
    let host = normal_host(host);
    if !host.contains('.') || is_local_name(&host) || !is_dns_name(&host) {
        return false;
    }
    if ends_in_digits(&host) {
        return false;
    }
    host.strip_suffix(suffix)
        .and_then(|labels| labels.strip_suffix('.'))
        .is_some_and(|labels| !labels.is_empty())
}

/// The number of a tel: URI without visual separators, when it is only digits after
/// an optional `+` (no `*`, `#` or letters: those are service codes, never allowed).
fn tel_number(uri: &SipUri) -> Option<String> {
    let n: String = uri
        .user
        .as_deref()?
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    let digits = n.strip_prefix('+').unwrap_or(&n);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

/// RFC 3261 19.1.4, as far as it matters here: scheme, user (case-sensitive), host
/// (case-insensitive) and port must agree; `user`, `ttl`, `method`, `maddr` and
/// `transport` must agree when either side has them; other parameters only when both
/// have them. tel: URIs compare by number without visual separators (RFC 3966 4).
pub(super) fn uri_equivalent(a: &SipUri, b: &SipUri) -> bool {
    if a.scheme != b.scheme {
        return false;
    }
    if a.scheme == "tel" {
        let ctx = |u: &SipUri| u.param("phone-context").flatten().map(normal_host);
        return tel_number(a).is_some() && tel_number(a) == tel_number(b) && ctx(a) == ctx(b);
    }
    if a.user != b.user || HostName::of(&a.host) != HostName::of(&b.host) || a.port != b.port {
        return false;
    }
    let value = |v: Option<&str>| v.map(str::to_ascii_lowercase);
    for name in ["user", "ttl", "method", "maddr", "transport"] {
        if a.param(name).map(value) != b.param(name).map(value) {
            return false;
        }
    }
    a.params.iter().all(|(name, v)| match b.param(name) {
        Some(w) => value(v.as_deref()) == value(w),
        None => true,
    })
}

/// The URI's `transport=`, when it is one we speak.
fn check_uri_transport(uri: &SipUri) -> Result<Option<Transport>, Refused> {
    let t = match uri.transport() {
        None => None,
        Some(t) => Some(Transport::from_name(&t).ok_or(Refused::Transport(t))?),
    };
    // RFC 3261 26.2.2, RFC 5630 3.1: sips: is TLS on every hop; never UDP.
    if uri.scheme == "sips" && t == Some(Transport::Udp) {
        return Err(Refused::Transport("udp".into()));
    }
    Ok(t)
}

/// Whether a transfer to `uri` notes the ticket unless configured: only when it
/// goes into Zendesk itself (SIP-IN), where the ticket is the agent's work item; a
/// note is a write to the customer's Zendesk, asked for elsewhere by `ticket_note`.
pub(super) fn default_ticket_note(uri: &SipUri) -> bool {
    uri.scheme == "sip" && is_zendesk_host(&uri.host)
}

/// True for a Zendesk SIP-IN host (`<subdomain>.zendesk.sip.twilio.com`).
pub(super) fn is_zendesk_host(host: &str) -> bool {
    let h = normal_host(host);
    h == "zendesk.sip.twilio.com" || h.ends_with(".zendesk.sip.twilio.com")
}

fn kind_of(uri: &SipUri, header_params: &[(String, Option<String>)]) -> DestinationKind {
    if uri.scheme == "tel" {
        return DestinationKind::Tel;
    }
    let user_phone = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case("phone"));
    // In an addr-spec every `;` parameter belongs to the header (RFC 3261 20.10), but a
    // `user=phone` there was surely meant for the URI; reading it so only ever withholds
    // the ticket headers.
    let in_header = header_params
        .iter()
        .any(|(n, v)| n == "user" && user_phone(v.as_deref()));
    if user_phone(uri.param("user").flatten()) || in_header {
        DestinationKind::SipUserPhone
    } else {
        DestinationKind::Sip
    }
}

/// A compiled `[[transfer.destination]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NamedDestination {
    pub(super) name: String,
    pub(super) uri: SipUri,
    /// None: the default codecs.
    pub(super) codecs: Option<Vec<String>>,
    pub(super) credentials: Option<Credentials>,
    pub(super) transport: Option<Transport>,
    pub(super) contract: std::sync::Arc<super::contract::Contract>,
    pub(super) ticket_note: bool,
    pub(super) srtp: crate::config::srtp::SrtpPolicy,
}

/// The compiled allow-list: patterns plus named destinations. Build it with
/// [`super::TransferSettings::compile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    pub(super) patterns: Vec<Pattern>,
    pub(super) named: Vec<NamedDestination>,
}

impl AllowList {
    /// Decide whether a Refer-To target may be dialled, and how.
    pub fn check(&self, target: &ReferTarget) -> Result<Destination, Refused> {
        self.check_with_params(&target.uri, &target.params)
    }

    /// The same for a bare URI, e.g. a 3xx Contact (each redirect is checked again).
    pub fn check_uri(&self, uri: &SipUri) -> Result<Destination, Refused> {
        self.check_with_params(uri, &[])
    }

    fn check_with_params(
        &self,
        uri: &SipUri,
        header_params: &[(String, Option<String>)],
    ) -> Result<Destination, Refused> {
        if uri.param("maddr").is_some() {
            return Err(Refused::Maddr);
        }
        let uri_transport = check_uri_transport(uri)?;
        if let Some(n) = self.named.iter().find(|n| uri_equivalent(&n.uri, uri)) {
            return Ok(Destination {
                name: Some(n.name.clone()),
                uri: n.uri.clone(),
                kind: kind_of(&n.uri, header_params),
                codecs: n.codecs.clone().unwrap_or_else(default_codecs),
                credentials: n.credentials.clone(),
                transport: n.transport.or(uri_transport),
                contract: n.contract.clone(),
                ticket_note: n.ticket_note,
                srtp: n.srtp,
            });
        }
        if self.patterns.iter().any(|p| p.matches(uri)) {
            return Ok(Destination {
                name: None,
                uri: uri.clone(),
                kind: kind_of(uri, header_params),
                codecs: default_codecs(),
                credentials: None,
                transport: uri_transport,
                contract: std::sync::Arc::new(super::contract::Contract::for_host(&uri.host)),
                ticket_note: default_ticket_note(uri),
                srtp: Default::default(),
            });
        }
        Err(Refused::NotAllowed)
    }

    /// The named destination of that name (exact).
    pub fn destination(&self, name: &str) -> Option<Destination> {
        let n = self.named.iter().find(|n| n.name == name)?;
        self.check_uri(&n.uri).ok()
    }

    /// The sip: URIs of the destinations that name one host: the named ones, the
    /// `sip:` patterns and the exact hosts (a wildcard names no address). The source
    /// ACL treats their addresses as handoff's own peers.
    pub fn peer_uris(&self) -> Vec<SipUri> {
        let named = self.named.iter().map(|n| n.uri.clone());
        let patterns = self.patterns.iter().filter_map(|p| match p {
            Pattern::Uri(u) => Some(u.clone()),
            Pattern::Host { host, port } => {
                let host = match host {
                    HostName::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
                    HostName::Ip(ip) => ip.to_string(),
                    HostName::Name(n) => n.clone(),
                };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                SipUri::parse(&format!("sip:{host}{port}"))
            }
            Pattern::Wildcard(_) | Pattern::Tel { .. } => None,
        });
        named
            .chain(patterns)
            .filter(|u| u.scheme == "sip")
            .collect()
    }
}

fn default_codecs() -> Vec<String> {
    DEFAULT_CODECS.iter().map(|c| (*c).to_owned()).collect()
}

/// The transport a named destination's URI asks for, checked at config time.
pub(super) fn uri_transport(uri: &SipUri) -> Result<Option<Transport>, String> {
    check_uri_transport(uri).map_err(|e| e.to_string())
}
