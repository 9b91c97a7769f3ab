//! The private note handoff adds to the session's Zendesk ticket when a transfer
//! completes (issue 16): its text, built here from what the call knew, and the
//! checks on the AI agent's summary. Pure; the task that posts it is `notes.rs`.
//!
//! The note goes as the comment's plain `body`, never `html_body`. Zendesk still
//! renders Markdown in `body` (when the account allows it) and links URLs, so the
//! summary, which comes from outside (a REFER header or the session API), is
//! neutralised by [`plain`]: no HTML tag, no Markdown link or image, no live URL,
//! no @mention, no control or invisible character survive. The note carries the
//! caller's full number: it goes to the customer's own Zendesk, for its agents.

use std::time::Duration;

/// Largest summary kept, in bytes (UTF-8), from either source.
pub const MAX_SUMMARY: usize = 2000;

/// The REFER header the AI agent may put its summary in, unless configured otherwise.
pub const DEFAULT_SUMMARY_HEADER: &str = "X-OPENCX-SUMMARY";

/// Most lines a summary keeps.
const MAX_LINES: usize = 40;

/// What the call hands the note task when a transfer completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketNote {
    pub ticket_id: u64,
    /// Whose Zendesk account the ticket lives in.
    pub org_id: String,
    pub session_id: String,
    pub agent_id: String,
    /// E.164, None when anonymous.
    pub caller_phone: Option<String>,
    /// The `[[transfer.destination]]` name, when it was one.
    pub destination: Option<String>,
    /// From the call's start to the transfer's answer.
    pub duration: Duration,
    /// The AI agent's summary as received (checked and bounded, not yet made plain).
    pub summary: Option<String>,
    /// The transfer's index in the call's record: one note per completed transfer.
    pub transfer: usize,
}

/// Why a summary set through the session API is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SummaryError {
    #[error("summary must be a string of at most {MAX_SUMMARY} bytes, or null")]
    TooLong,
    #[error("summary must not contain control characters other than line breaks and tabs")]
    Control,
}

/// A summary from the session API: at most [`MAX_SUMMARY`] bytes, line breaks and
/// tabs allowed, any other control character refused. Blank is no summary.
pub fn check_summary(s: &str) -> Result<Option<String>, SummaryError> {
    if s.len() > MAX_SUMMARY {
        return Err(SummaryError::TooLong);
    }
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(SummaryError::Control);
    }
    Ok(Some(s.trim()).filter(|t| !t.is_empty()).map(str::to_owned))
}

/// A summary from the REFER header (the transfer never fails for it): control
/// characters dropped, cut to [`MAX_SUMMARY`] bytes on a character boundary with
/// a mark that it was cut. Blank is no summary.
pub fn summary_from_header(value: &str) -> Option<String> {
    let clean: String = value.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.is_empty() {
        return None;
    }
    Some(cut(clean, MAX_SUMMARY))
}

const CUT_MARK: &str = " (cut)";

/// `s` in at most `max` bytes, ending in [`CUT_MARK`] when it was longer.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(CUT_MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT_MARK}", s[..end].trim_end())
}

/// Characters that render nothing or reorder text (zero-width, bidi controls, BOM):
/// dropped, so that what an agent reads is what is there.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}')
}

/// Text from outside made plain for a Zendesk `body`: line breaks normalised (at
/// most [`MAX_LINES`] lines, no run of blank lines), control and invisible
/// characters dropped; `<` `>` (HTML, autolinks, quotes) and `[` `]` (Markdown
/// links and images) replaced by look-alikes; URLs defanged (`hxxps://`,
/// `www[.]`); `@` made full-width so that nothing becomes a mention; a line
/// starting with Markdown block syntax (`#`, `-`, `*`, `+`, `=`, `|`, `_`, `~`)
/// gets a leading `·`, and leading spaces go (no code block), so each line reads
/// the same whether the account renders Markdown or not.
pub fn plain(s: &str) -> String {
    let unified = s.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<String> = Vec::new();
    for line in unified.split('\n') {
        let text = inline(line);
        let line = if block_syntax(&text) {
            format!("· {text}")
        } else {
            text
        };
        if line.is_empty() && lines.last().is_none_or(|l| l.is_empty()) {
            continue; // No leading blank line, no run of them.
        }
        lines.push(line);
        if lines.len() == MAX_LINES {
            break;
        }
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

/// One line made plain: control and invisible characters dropped, the
/// characters of HTML, links, code and mentions replaced, URLs defanged, trimmed.
pub fn inline(s: &str) -> String {
    let mapped: String = s
        .chars()
        .filter(|c| !c.is_control() && !invisible(*c))
        .map(|c| match c {
            '<' => '‹',
            '>' => '›',
            '[' => '(',
            ']' => ')',
            '@' => '＠',
            '`' => '\'',
            other => other,
        })
        .collect();
    defang(mapped.trim())
}

/// A line Markdown would read as a heading, list item, rule or table row.
fn block_syntax(line: &str) -> bool {
    let mut chars = line.chars();
    match (chars.next(), chars.next()) {
        (Some('#' | '|'), _) => true,
        (Some(c @ ('-' | '*' | '+' | '=' | '_' | '~')), next) => {
            next.is_none_or(|n| n == c || n.is_whitespace())
        }
        _ => false,
    }
}

/// `://` and `www.` made inert (case-insensitive): Zendesk links neither.
fn defang(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let lower = s.to_ascii_lowercase();
    let mut i = 0;
    while i < s.len() {
        let rest = &lower[i..];
        if rest.starts_with("://") {
            out.push_str("(:)//");
            i += 3;
        } else if rest.starts_with("www.") {
            out.push_str(&s[i..i + 3]);
            out.push_str("(.)");
            i += 4;
        } else if rest.starts_with("http") {
            // hxxp, as threat reports write it; the scheme is no scheme.
            out.push_str(&s[i..i + 1]);
            out.push_str("xx");
            out.push_str(&s[i + 3..i + 4]);
            i += 4;
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8().max(1);
        }
    }
    out
}

/// The line that makes a note findable again: a retry after a lost answer looks
/// for it among the ticket's comments before posting a second time.
pub fn marker(session_id: &str, transfer: usize) -> String {
    format!("handoff-note: {session_id}/{transfer}")
}

/// Whether one of these comment bodies is the note with `marker`.
pub fn has_marker<'a>(mut bodies: impl Iterator<Item = &'a str>, marker: &str) -> bool {
    bodies.any(|b| b.lines().any(|l| l.trim() == marker))
}

/// "4m 05s", "1h 02m 03s", "12s".
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, s) => format!("{h}h {m:02}m {s:02}s"),
    }
}

/// The note's text. Every value from outside is made [`plain`]; the session id
/// and agent id are handoff's own (token characters) but pass through it too.
pub fn body(n: &TicketNote) -> String {
    let one = |s: &str| inline(&s.replace(['\r', '\n'], " "));
    let mut out = String::from("The AI agent handed this caller over to a person (handoff).\n\n");
    out.push_str(&format!("AI agent: {}\n", one(&n.agent_id)));
    out.push_str(&format!("Session: {}\n", one(&n.session_id)));
    out.push_str(&format!(
        "Call duration at handoff: {}\n",
        format_duration(n.duration)
    ));
    out.push_str(&format!(
        "Caller: {}\n",
        n.caller_phone
            .as_deref()
            .map(one)
            .unwrap_or_else(|| "anonymous".into())
    ));
    if let Some(d) = &n.destination {
        out.push_str(&format!("Transferred to: {}\n", one(d)));
    }
    match n.summary.as_deref().map(plain).filter(|s| !s.is_empty()) {
        Some(s) => {
            out.push_str("\nSummary from the AI agent:\n");
            out.push_str(&s);
            out.push('\n');
        }
        None => out.push_str("\nThe AI agent gave no summary.\n"),
    }
    out.push('\n');
    out.push_str(&marker(&n.session_id, n.transfer));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(summary: Option<&str>) -> TicketNote {
        TicketNote {
            ticket_id: 100,
            org_id: "org-1".into(),
            session_id: "s-abc".into(),
            agent_id: "agent-test".into(),
            caller_phone: Some("+14155551212".into()),
            destination: Some("zendesk".into()),
            duration: Duration::from_secs(245),
            summary: summary.map(str::to_owned),
            transfer: 0,
        }
    }

    #[test]
    fn note_names_agent_session_duration_caller_and_summary() {
        let b = body(&note(Some("Wants a refund for order 42.")));
        assert!(b.contains("AI agent: agent-test\n"), "{b}");
        assert!(b.contains("Session: s-abc\n"), "{b}");
        assert!(b.contains("Call duration at handoff: 4m 05s\n"), "{b}");
        assert!(b.contains("Caller: +14155551212\n"), "{b}");
        assert!(b.contains("Transferred to: zendesk\n"), "{b}");
        assert!(
            b.contains("Summary from the AI agent:\nWants a refund for order 42.\n"),
            "{b}"
        );
        assert!(b.ends_with("\nhandoff-note: s-abc/0"), "{b}");
        assert!(has_marker([b.as_str()].into_iter(), &marker("s-abc", 0)));
        assert!(!has_marker([b.as_str()].into_iter(), &marker("s-abc", 1)));
    }

    #[test]
    fn no_summary_and_anonymous_caller_are_said() {
        let mut n = note(None);
        n.caller_phone = None;
        n.destination = None;
        let b = body(&n);
        assert!(b.contains("Caller: anonymous\n"), "{b}");
        assert!(b.contains("The AI agent gave no summary."), "{b}");
        assert!(!b.contains("Transferred to"), "{b}");
    }

    #[test]
    fn markup_links_and_mentions_are_neutralised() {
        let hostile = "<script>alert(1)</script> <img src=x onerror=y>\n\
                       [click](https://evil.example/x) ![p](http://t.example/p.png)\n\
                       <https://auto.example> www.evil.example @admin `code`\n\
                       # Big heading\n- list\n> quote";
        let p = plain(hostile);
        for bad in ["<", ">", "[", "]", "://", "www.", "@", "http", "`"] {
            assert!(!p.contains(bad), "{bad:?} survives in {p}");
        }
        assert!(p.contains("‹script›alert(1)‹/script›"), "{p}");
        assert!(p.contains("hxxps(:)//evil.example/x"), "{p}");
        assert!(p.contains("www(.)evil.example"), "{p}");
        assert!(p.contains("＠admin"), "{p}");
        assert!(p.contains("\n· # Big heading\n· - list\n› quote"), "{p}");
        // What an agent reads keeps its words, a number included.
        assert_eq!(
            plain("Refund order 42, please."),
            "Refund order 42, please."
        );
        assert_eq!(
            plain("+14155551212 called\n-5 degrees"),
            "+14155551212 called\n-5 degrees"
        );
        assert_eq!(plain("---\n* item"), "· ---\n· * item");
    }

    #[test]
    fn control_and_invisible_characters_go_and_lines_are_bounded() {
        let p = plain("a\u{0}b\u{7}c\u{202E}d\u{200B}e\r\nnext\rthird\n\n\n\nfourth\n\n");
        assert_eq!(p, "abcde\nnext\nthird\n\nfourth");
        let many = "x\n".repeat(500);
        assert_eq!(plain(&many).lines().count(), MAX_LINES);
    }

    #[test]
    fn api_summary_is_checked_not_cut() {
        assert_eq!(
            check_summary("  two\nlines\t \r\n"),
            Ok(Some("two\nlines".into()))
        );
        assert_eq!(check_summary("   "), Ok(None));
        assert_eq!(
            check_summary(&"x".repeat(MAX_SUMMARY)).map(|s| s.map(|s| s.len())),
            Ok(Some(MAX_SUMMARY))
        );
        assert_eq!(
            check_summary(&"x".repeat(MAX_SUMMARY + 1)),
            Err(SummaryError::TooLong)
        );
        assert_eq!(check_summary("bell\u{7}"), Err(SummaryError::Control));
        assert_eq!(check_summary("esc\u{1b}[31m"), Err(SummaryError::Control));
    }

    #[test]
    fn header_summary_is_cleaned_and_cut_on_a_character_boundary() {
        assert_eq!(summary_from_header("  "), None);
        assert_eq!(summary_from_header("a\u{0}b"), Some("ab".into()));
        let long = "é".repeat(MAX_SUMMARY); // two bytes each
        let s = summary_from_header(&long).expect("kept");
        assert!(s.len() <= MAX_SUMMARY, "{}", s.len());
        assert!(s.ends_with(" (cut)"), "{s}");
        assert_eq!(summary_from_header("short"), Some("short".into()));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_secs(12)), "12s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h 02m 03s");
    }
}
