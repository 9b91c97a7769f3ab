//! What the transfer INVITE carries besides the SDP: the context headers decided from
//! the session alone ([`transfer_headers`]), the `X-` headers copied from the Refer-To
//! URI ([`CopyRule`]) and the From ([`transfer_from`]). Every value is checked before
//! it is written; an invalid optional one is left out and reported, never sent.

use super::allow::{Destination, DestinationKind};
use super::refer_to::ReferTarget;
use super::settings::TransferSettings;
use crate::b2bua::policy::{ai_leg_from, OPENCX_PREFIX};
use crate::session::Session;
use crate::sip::message::{bracket_v6, check_value, is_token_char, NameAddr, MAX_HEADER_LINE};

pub const X_OPENCX_SESSION_ID: &str = "X-OPENCX-SESSION-ID";
pub const X_OPENCX_AGENT_ID: &str = "X-OPENCX-AGENT-ID";
pub const X_OPENCX_TRANSFER: &str = "X-OPENCX-TRANSFER";
pub const X_OPENCX_CONTACT_ID: &str = "X-OPENCX-CONTACT-ID";
pub const X_OPENCX_ZENDESK_TICKET_ID: &str = "X-OPENCX-ZENDESK-TICKET-ID";
/// Zendesk's own SIP-IN header that attaches the call to an existing ticket.
pub const X_ZENDESK_TICKET_ID: &str = "X-Zendesk-Ticket-Id";

/// Most `X-` headers copied from one Refer-To; the rest are left out and reported.
pub const MAX_COPIED_HEADERS: usize = 16;

/// Why a header value was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    #[error("value contains a control character (CR, LF, NUL or similar)")]
    ControlCharacter,
    #[error("value is not made of token characters")]
    NotToken,
    #[error("value is not a decimal number")]
    NotDigits,
    #[error("value is empty")]
    Empty,
    #[error("header line would be {0} bytes, over the {MAX_HEADER_LINE} byte limit")]
    TooLong(usize),
    #[error("name is not an X- header token")]
    BadName,
    #[error("header is set only by handoff from the session")]
    Reserved,
    #[error("not listed in [transfer] copy_refer_headers")]
    NotListed,
    #[error("more than {MAX_COPIED_HEADERS} headers to copy")]
    TooMany,
    #[error("the destination's profile does not take this header")]
    RefusedByTarget,
    #[error("a header of this name is already on the INVITE")]
    Duplicate,
    #[error("the URI header part would be {0} characters, over the 1023 allowed")]
    UriTooLong(usize),
}

/// A header left out, for the caller to log. The name is safe to log as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Omitted {
    pub name: String,
    pub problem: HeaderProblem,
}

/// The context headers of a transfer INVITE, in the order they are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferHeaders {
    pub headers: Vec<(&'static str, String)>,
    pub omitted: Vec<Omitted>,
}

impl TransferHeaders {
    /// The value written for `name` (exact spelling), if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The line must stay under [`MAX_HEADER_LINE`] (Twilio rejects 1 KiB lines).
pub(super) fn check_line(name: &str, value: &str) -> Result<(), HeaderProblem> {
    check_value(value).map_err(|_| HeaderProblem::ControlCharacter)?;
    let line = name.len() + 2 + value.len();
    if line >= MAX_HEADER_LINE {
        return Err(HeaderProblem::TooLong(line));
    }
    Ok(())
}

/// An id (session, agent, contact): RFC 3261 token characters only, under the line
/// limit.
pub fn check_id(name: &str, value: &str) -> Result<(), HeaderProblem> {
    check_line(name, value)?;
    if value.is_empty() {
        return Err(HeaderProblem::Empty);
    }
    if !value.bytes().all(is_token_char) {
        return Err(HeaderProblem::NotToken);
    }
    Ok(())
}

/// A Zendesk ticket id: decimal digits only.
pub fn check_ticket_id(name: &str, value: &str) -> Result<(), HeaderProblem> {
    check_line(name, value)?;
    if value.is_empty() {
        return Err(HeaderProblem::Empty);
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderProblem::NotDigits);
    }
    Ok(())
}

type Check = fn(&str, &str) -> Result<(), HeaderProblem>;

/// The headers a transfer leg gets from the session (issue 4):
/// - `X-OPENCX-SESSION-ID`, `X-OPENCX-AGENT-ID`, `X-OPENCX-TRANSFER: true` always;
/// - `X-OPENCX-CONTACT-ID` when the session has a resolved contact;
/// - `X-OPENCX-ZENDESK-TICKET-ID` and `X-Zendesk-Ticket-Id` only when a ticket is
///   stamped AND the destination is a plain SIP URI (a `tel:` or `user=phone` target
///   goes through a carrier); the second unless `zendesk_native_ticket_header = false`.
pub fn transfer_headers(
    session: &Session,
    dest: &Destination,
    settings: &TransferSettings,
) -> TransferHeaders {
    let mut out = TransferHeaders::default();
    let mut put = |name: &'static str, value: String, check: Check| match check(name, &value) {
        Ok(()) => out.headers.push((name, value)),
        Err(problem) => out.omitted.push(Omitted {
            name: name.to_owned(),
            problem,
        }),
    };
    put(
        X_OPENCX_SESSION_ID,
        session.id.as_str().to_owned(),
        check_id,
    );
    put(X_OPENCX_AGENT_ID, session.agent_id.clone(), check_id);
    put(X_OPENCX_TRANSFER, "true".to_owned(), check_id);
    if let Some(contact) = &session.contact_id {
        put(X_OPENCX_CONTACT_ID, contact.clone(), check_id);
    }
    if let (Some(ticket), DestinationKind::Sip) = (session.zendesk_ticket_id, dest.kind) {
        let ticket = ticket.to_string();
        put(X_OPENCX_ZENDESK_TICKET_ID, ticket.clone(), check_ticket_id);
        if settings.zendesk_native_ticket_header {
            put(X_ZENDESK_TICKET_ID, ticket, check_ticket_id);
        }
    }
    out
}

/// `[transfer] copy_refer_headers` compiled: which `X-` headers embedded in the
/// Refer-To URI may be copied onto the transfer INVITE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyRule {
    all: bool,
    /// Lowercase names.
    names: Vec<String>,
}

/// Headers only handoff writes, from the session: never taken from a REFER.
pub(super) fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with(&OPENCX_PREFIX.to_ascii_lowercase())
        || lower == X_ZENDESK_TICKET_ID.to_ascii_lowercase()
}

fn is_x_name(name: &str) -> bool {
    name.len() > 2
        && name[..2].eq_ignore_ascii_case("X-")
        && name.bytes().all(is_token_char)
        && name.len() <= 128
}

/// A name from outside made safe to log: control characters escaped, at most 64
/// characters kept.
pub(super) fn loggable(name: &str) -> String {
    name.chars().take(64).flat_map(char::escape_debug).collect()
}

/// Headers copied from a Refer-To, in the order they appeared there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopiedHeaders {
    pub headers: Vec<(String, String)>,
    pub omitted: Vec<Omitted>,
}

impl CopyRule {
    /// From the config list; the error carries the index of the bad entry.
    pub(super) fn parse(list: &[String]) -> Result<CopyRule, (usize, String)> {
        let mut rule = CopyRule::default();
        for (i, n) in list.iter().enumerate() {
            if n == "X-*" || n == "x-*" {
                rule.all = true;
            } else if !is_x_name(n) {
                return Err((
                    i,
                    format!("{n:?} is not an X- header name (or \"X-*\" for all)"),
                ));
            } else if is_reserved(n) {
                return Err((
                    i,
                    format!("{n:?} is set only by handoff, never copied from a REFER"),
                ));
            } else {
                rule.names.push(n.to_ascii_lowercase());
            }
        }
        Ok(rule)
    }

    fn allows(&self, name: &str) -> bool {
        self.all || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The `X-` headers of the Refer-To URI to copy. Only `X-` names are candidates
    /// (others, such as `Replaces`, are silently not headers of the new INVITE);
    /// `X-OPENCX-*` and `X-Zendesk-Ticket-Id` never are (they come from the session).
    pub fn copy(&self, target: &ReferTarget) -> CopiedHeaders {
        let mut out = CopiedHeaders::default();
        for (name, value) in &target.uri_headers {
            if !name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("X-")) {
                continue;
            }
            let verdict = if !is_x_name(name) {
                Err(HeaderProblem::BadName)
            } else if is_reserved(name) {
                Err(HeaderProblem::Reserved)
            } else if !self.allows(name) {
                Err(HeaderProblem::NotListed)
            } else if out.headers.len() >= MAX_COPIED_HEADERS {
                Err(HeaderProblem::TooMany)
            } else {
                check_line(name, value)
            };
            match verdict {
                Ok(()) => out.headers.push((name.clone(), value.clone())),
                Err(problem) => out.omitted.push(Omitted {
                    name: loggable(name),
                    problem,
                }),
            }
        }
        out
    }
}

/// `[transfer] fallback_from`, checked at config time: the From of a transfer leg
/// whose caller has no usable number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackFrom {
    display_name: Option<String>,
    uri: String,
}

impl FallbackFrom {
    pub(super) fn parse(value: &str) -> Result<FallbackFrom, String> {
        let na = NameAddr::parse(value)
            .filter(|_| check_value(value).is_ok() && value.len() <= 256)
            .ok_or_else(|| format!("{value:?} is not a SIP URI or name-addr"))?;
        if na.uri.scheme != "sip" && na.uri.scheme != "sips" {
            return Err(format!("{value:?} is not a sip: or sips: URI"));
        }
        if na.uri.as_str().contains('?') {
            return Err(format!("{value:?}: a From URI cannot carry headers"));
        }
        if !na.params.is_empty() {
            return Err(format!(
                "{value:?}: no header parameters (the tag is handoff's)"
            ));
        }
        Ok(FallbackFrom {
            display_name: na.display_name.filter(|d| !d.is_empty()),
            uri: na.uri.as_str().to_owned(),
        })
    }
}

/// Longest display name written, in bytes.
const MAX_DISPLAY_NAME: usize = 100;

/// A display name from outside made safe for a quoted-string: control characters
/// removed, whitespace trimmed, cut to 100 bytes on a character boundary. (Quotes and
/// backslashes are escaped by `NameAddr::format`.)
fn sanitize_display(name: &str) -> Option<String> {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    let mut end = clean.len().min(MAX_DISPLAY_NAME);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let cut = clean[..end].trim_end();
    (!cut.is_empty()).then(|| cut.to_owned())
}

/// `+` and 1 to 15 digits, the first not 0 (ITU-T E.164).
fn is_e164(n: &str) -> bool {
    n.strip_prefix('+').is_some_and(|d| {
        (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// The From of the transfer leg: the caller's E.164 number as the user part at our
/// host, display name kept (so Zendesk shows and matches the caller); without a usable
/// number, the configured fallback. `our_host` is a host name or IP (IPv6 bracketed
/// here), `tag` our fresh From tag.
pub fn transfer_from(
    session: &Session,
    our_host: &str,
    tag: &str,
    fallback: &FallbackFrom,
) -> String {
    let display = session
        .caller_display_name
        .as_deref()
        .and_then(sanitize_display);
    match session.caller_phone.as_deref() {
        Some(num) if is_e164(num) => {
            ai_leg_from(display.as_deref(), Some(num), &bracket_v6(our_host), tag)
        }
        _ => NameAddr::format(fallback.display_name.as_deref(), &fallback.uri, Some(tag)),
    }
}
