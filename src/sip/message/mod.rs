//! SIP messages: parsing and building on top of `rsip`, behind our own boundary so
//! no other module depends on rsip's types.
//!
//! rsip 0.4 tokenises the header block strictly; the pre-pass in [`parse`] closes its
//! gaps (compact names, whitespace before the colon, folded lines, non-UTF-8 bodies)
//! and rsip then checks the start line's URI and the typed headers we read.

mod headers;
mod malformed;
mod parse;
mod strict;
mod typed;

pub use headers::{
    check_value, is_token_char, split_list, Header, HeaderName, HeaderValueError, MAX_HEADER_LINE,
};
pub use malformed::malformed_response;
pub use parse::{parse, ParseError, ParseErrorKind};
pub use typed::{
    bracket_v6, generate_branch, generate_call_id, generate_tag, CSeq, NameAddr, SipUri, Via,
    BRANCH_MAGIC_COOKIE,
};

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// SIP request methods we know by name; anything else is kept as an extension method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Refer,
    Notify,
    Subscribe,
    Info,
    Update,
    Prack,
    Message,
    Publish,
    Extension(String),
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        if s.is_empty() || !s.bytes().all(is_token_char) {
            return None;
        }
        // Methods are case-sensitive (RFC 3261 7.1).
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_owned()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { status: u16, reason: String },
}

/// A parsed or built SIP message. Headers keep their order; the body is raw bytes and
/// never reinterpreted as text.
#[derive(Debug, Clone)]
pub struct Message {
    start: StartLine,
    headers: Vec<Header>,
    body: Bytes,
    /// The top Via, parsed once on first use: matching reads it several times per
    /// message. Reset whenever a Via header changes.
    via_cache: std::cell::OnceCell<Option<Via>>,
}

impl Message {
    pub fn request(method: Method, uri: impl Into<String>) -> Self {
        Message {
            start: StartLine::Request {
                method,
                uri: uri.into(),
            },
            headers: Vec::with_capacity(12),
            body: Bytes::new(),
            via_cache: std::cell::OnceCell::new(),
        }
    }

    pub fn response(status: u16, reason: impl Into<String>) -> Self {
        Message {
            start: StartLine::Response {
                status,
                reason: reason.into(),
            },
            headers: Vec::with_capacity(12),
            body: Bytes::new(),
            via_cache: std::cell::OnceCell::new(),
        }
    }

    /// A response to `req` as RFC 3261 8.2.6.2 builds it: Via, From, To, Call-ID and CSeq
    /// copied; a To tag added when the request had none and `to_tag` is given. A
    /// response that establishes a dialog (1xx but 100, or 2xx, to an initial
    /// INVITE) also copies the Record-Route values (RFC 3261 12.1.1), so a proxy that
    /// record-routed stays in the caller's route set.
    pub fn response_to(req: &Message, status: u16, to_tag: Option<&str>) -> Self {
        let mut resp = Message::response(status, default_reason(status));
        let establishes = (101..300).contains(&status)
            && req.method() == Some(&Method::Invite)
            && req.to_tag().is_none();
        for h in &req.headers {
            if h.name.is("Via")
                || h.name.is("From")
                || h.name.is("Call-ID")
                || h.name.is("CSeq")
                || (establishes && h.name.is("Record-Route"))
            {
                resp.headers.push(h.clone());
            } else if h.name.is("To") {
                let mut value = h.value.clone();
                if let Some(tag) = to_tag {
                    if !NameAddr::has_tag_param(&value) {
                        value.push_str(";tag=");
                        value.push_str(tag);
                    }
                }
                resp.headers.push(Header {
                    name: HeaderName::of("To"),
                    value,
                });
            }
        }
        resp
    }

    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    pub fn set_reason(&mut self, new: impl Into<String>) {
        if let StartLine::Response { reason, .. } = &mut self.start {
            *reason = new.into();
        }
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// First value of the named header (compact forms were expanded at parse time).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.is(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of the named header, list headers split on top-level commas.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.is(name))
            .flat_map(|h| split_list(&h.value))
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|h| h.name.is(name)).count()
    }

    /// Append a header from our own code. The value must not come from outside
    /// unchecked: use [`Message::push_checked`] for that.
    pub fn push(&mut self, name: &'static str, value: impl Into<String>) {
        self.via_changed(name);
        self.headers.push(Header {
            name: HeaderName::of(name),
            value: value.into(),
        });
    }

    /// Append a header whose value came from outside, refusing control characters and
    /// over-long lines.
    pub fn push_checked(&mut self, name: &str, value: &str) -> Result<(), HeaderValueError> {
        self.headers.push(Header::checked(name, value)?);
        self.via_changed(name);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) {
        self.via_changed(name);
        self.headers.retain(|h| !h.name.is(name));
    }

    /// Remove every header whose name starts with `prefix` (case-insensitive).
    pub fn remove_prefixed(&mut self, prefix: &str) -> usize {
        let before = self.headers.len();
        self.headers.retain(|h| {
            let n = h.name.as_str();
            !(n.len() >= prefix.len() && n[..prefix.len()].eq_ignore_ascii_case(prefix))
        });
        before - self.headers.len()
    }

    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.via_changed(name);
        let value = value.into();
        match self.headers.iter_mut().find(|h| h.name.is(name)) {
            Some(h) => h.value = value,
            None => self.push(name, value),
        }
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn set_body(&mut self, body: Bytes) {
        self.body = body;
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    pub fn cseq(&self) -> Option<CSeq> {
        self.header("CSeq").and_then(CSeq::parse)
    }

    pub fn top_via(&self) -> Option<&Via> {
        self.via_cache
            .get_or_init(|| self.header_values("Via").next().and_then(Via::parse))
            .as_ref()
    }

    /// The top Via's branch, or "" when there is none.
    pub fn branch(&self) -> &str {
        self.top_via().and_then(|v| v.branch()).unwrap_or("")
    }

    pub fn from_header(&self) -> Option<NameAddr> {
        self.header("From").and_then(NameAddr::parse)
    }

    pub fn to_header(&self) -> Option<NameAddr> {
        self.header("To").and_then(NameAddr::parse)
    }

    pub fn from_tag(&self) -> Option<&str> {
        self.header("From").and_then(NameAddr::tag_of)
    }

    pub fn to_tag(&self) -> Option<&str> {
        self.header("To").and_then(NameAddr::tag_of)
    }

    /// Max-Forwards as a number; None when absent, Some(Err) when unparsable.
    pub fn max_forwards(&self) -> Option<Result<u32, ()>> {
        self.header("Max-Forwards")
            .map(|v| v.trim().parse::<u32>().map_err(|_| ()))
    }

    fn via_changed(&mut self, name: &str) {
        if name.eq_ignore_ascii_case("Via") || name.eq_ignore_ascii_case("v") {
            self.via_cache = std::cell::OnceCell::new();
        }
    }

    /// RFC 3261 18.2.1 and RFC 3581 4: note the real source on the top Via of a
    /// request. The header is rewritten only when something was added.
    pub fn stamp_source(&mut self, ip: std::net::IpAddr, port: u16) {
        let Some(mut via) = self.top_via().cloned() else {
            return;
        };
        if via.stamp_source(ip, port) {
            self.replace_top_via(&via);
            let _ = self.via_cache.set(Some(via));
        }
    }

    /// Rewrite the top Via (RFC 3581: add `received` and fill `rport`).
    pub fn replace_top_via(&mut self, via: &Via) {
        self.via_cache = std::cell::OnceCell::new();
        if let Some(idx) = self.headers.iter().position(|h| h.name.is("Via")) {
            let rest: Vec<String> = split_list(&self.headers[idx].value)
                .skip(1)
                .map(str::to_owned)
                .collect();
            let mut value = via.to_string();
            for r in rest {
                value.push_str(", ");
                value.push_str(&r);
            }
            self.headers[idx].value = value;
        }
    }

    /// Serialise. Content-Length is always written from the actual body, whatever the
    /// headers said, so what we send is never framed wrongly (RFC 3261 18.3, 20.14).
    pub fn to_bytes(&self) -> Bytes {
        let mut size = 64 + self.body.len();
        for h in &self.headers {
            size += h.name.as_str().len() + h.value.len() + 4;
        }
        let mut out = BytesMut::with_capacity(size);
        match &self.start {
            StartLine::Request { method, uri } => {
                out.put_slice(method.as_str().as_bytes());
                out.put_u8(b' ');
                out.put_slice(uri.as_bytes());
                out.put_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { status, reason } => {
                out.put_slice(b"SIP/2.0 ");
                out.put_slice(status.to_string().as_bytes());
                out.put_u8(b' ');
                out.put_slice(reason.as_bytes());
                out.put_slice(b"\r\n");
            }
        }
        for h in &self.headers {
            if h.name.is("Content-Length") {
                continue;
            }
            out.put_slice(h.name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(h.value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"Content-Length: ");
        out.put_slice(self.body.len().to_string().as_bytes());
        out.put_slice(b"\r\n\r\n");
        out.put_slice(&self.body);
        out.freeze()
    }
}

/// The reason phrase RFC 3261 section 21 gives a status code.
pub fn default_reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300..=399 => "Redirection",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod response_tests;
