//! Cutting a TCP byte stream into SIP messages (RFC 3261 18.3): the header block ends
//! at the first empty line, the body is exactly Content-Length bytes. Pure, no I/O.

use bytes::{Buf, Bytes, BytesMut};

/// What the framer found at the front of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message, header block and body.
    Message(Bytes),
    /// A double-CRLF keep-alive ping (RFC 5626 4.4.1); answer with a single CRLF.
    Ping,
    /// The header block of a message whose Content-Length is unreadable or given twice
    /// with different values: where its body ends is unknown, so the stream cannot be
    /// framed past it. Answer it (400), then close the connection.
    Unframeable(Bytes),
}

/// The stream cannot be framed any further; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("message exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("stream does not start with a SIP start line")]
    NotSip,
    #[error("unreadable Content-Length")]
    BadContentLength,
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
}

/// Accumulates stream bytes and yields whole frames.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_message: usize,
    /// Set once a frame was [`Frame::Unframeable`]: nothing after it can be read.
    lost: Option<FramingError>,
}

impl Framer {
    pub fn new(max_message: usize) -> Self {
        Framer {
            buf: BytesMut::with_capacity(4096),
            max_message,
            lost: None,
        }
    }

    /// Space to read into (the reader appends then calls [`Framer::next_frame`]).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Part of a message is buffered: something besides the CRs and LFs of
    /// keep-alives, which are no message and have no deadline.
    pub fn in_message(&self) -> bool {
        self.buf.iter().any(|b| *b != b'\r' && *b != b'\n')
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(e) = &self.lost {
            return Err(e.clone());
        }
        // Keep-alives and stray CRLFs between messages (RFC 3261 7.5, RFC 5626 4.4.1).
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.advance(4);
                return Ok(Some(Frame::Ping));
            }
            if self.buf.starts_with(b"\r\n") {
                if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf[..]) {
                    return Ok(None); // may yet become a ping
                }
                self.buf.advance(2);
                continue;
            }
            if self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
                continue;
            }
            break;
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.check_start()?;
        let Some(head_end) = find_blank_line(&self.buf) else {
            if self.buf.len() > self.max_message {
                return Err(FramingError::TooLarge {
                    limit: self.max_message,
                });
            }
            return Ok(None);
        };
        // A stream message without Content-Length has no body (RFC 3261 18.3 makes the
        // header mandatory on streams; treating it as zero keeps the stream in step).
        let body_len = match content_length(&self.buf[..head_end]) {
            Ok(n) => n.unwrap_or(0),
            Err(e) => {
                self.lost = Some(e);
                return Ok(Some(Frame::Unframeable(
                    self.buf.split_to(head_end).freeze(),
                )));
            }
        };
        let total = head_end
            .checked_add(body_len)
            .ok_or(FramingError::BadContentLength)?;
        if total > self.max_message {
            return Err(FramingError::TooLarge {
                limit: self.max_message,
            });
        }
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }

    /// A stream carrying something else (TLS, HTTP, noise) is refused as soon as its
    /// first line shows it, rather than after buffering 64 KiB of it.
    fn check_start(&self) -> Result<(), FramingError> {
        let line_end = self.buf.iter().position(|b| *b == b'\n');
        let first = &self.buf[..line_end.unwrap_or(self.buf.len()).min(256)];
        let printable = first
            .iter()
            .all(|b| (0x20..0x7f).contains(b) || *b == b'\r' || *b == b'\t');
        if !printable {
            return Err(FramingError::NotSip);
        }
        if let Some(end) = line_end {
            let line = first.strip_suffix(b"\r").unwrap_or(first);
            // Trailing spaces are the parser's to refuse with 400 (RFC 4475 3.1.2.10).
            let line = trim_end(line);
            let is_status = line.starts_with(b"SIP/");
            let is_request = line.ends_with(b" SIP/2.0")
                || line
                    .rsplit(|b| *b == b' ')
                    .next()
                    .is_some_and(|v| v.starts_with(b"SIP/"));
            if !(is_status || is_request) || end > 8192 {
                return Err(FramingError::NotSip);
            }
        } else if self.buf.len() > 8192 {
            return Err(FramingError::NotSip);
        }
        Ok(())
    }
}

/// Offset just past the CRLFCRLF (or LFLF) that ends the header block.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|b| *b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Content-Length (or its compact form `l`) from a header block. Every occurrence is
/// read: two different values leave the body's end unknown (RFC 4475 3.3.9).
fn content_length(head: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut found = None;
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = trim(&line[colon + 1..]);
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<usize>().ok())
                .ok_or(FramingError::BadContentLength)?;
            match found {
                Some(seen) if seen != n => return Err(FramingError::ConflictingContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(0, |e| e + 1);
    &s[..end]
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> String {
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn all(f: &mut Framer) -> Vec<Frame> {
        let mut out = vec![];
        while let Some(fr) = f.next_frame().expect("frames") {
            out.push(fr);
        }
        out
    }

    #[test]
    fn two_messages_in_one_read() {
        let mut f = Framer::new(65536);
        f.push(format!("{}{}", msg("abc"), msg("")).as_bytes());
        let frames = all(&mut f);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], Frame::Message(Bytes::from(msg("abc"))));
        assert_eq!(frames[1], Frame::Message(Bytes::from(msg(""))));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn one_message_split_over_many_reads() {
        let whole = msg("hello body");
        let mut f = Framer::new(65536);
        for (i, b) in whole.as_bytes().iter().enumerate() {
            f.push(&[*b]);
            let got = f.next_frame().unwrap();
            if i + 1 < whole.len() {
                assert_eq!(got, None, "frame early at byte {i}");
            } else {
                assert_eq!(got, Some(Frame::Message(Bytes::from(whole.clone()))));
            }
        }
    }

    #[test]
    fn missing_content_length_means_no_body() {
        let mut f = Framer::new(65536);
        f.push(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nhi",
        );
        let frames = all(&mut f);
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[1],
            Frame::Message(Bytes::from_static(
                b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nhi"
            ))
        );
    }

    #[test]
    fn lying_content_length_waits_then_desyncs_into_an_error() {
        let mut f = Framer::new(65536);
        // Says 100, sends 3, then the next message: the framer waits for 100 bytes...
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 100\r\n\r\nabc");
        assert_eq!(f.next_frame(), Ok(None));
        // ...and a Content-Length that is too short leaves garbage in front of the stream.
        let mut g = Framer::new(65536);
        g.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\n\r\nabc\x01\x02\r\n\r\n");
        assert!(matches!(g.next_frame(), Ok(Some(Frame::Message(_)))));
        assert_eq!(g.next_frame(), Err(FramingError::NotSip));
    }

    #[test]
    fn unreadable_content_length_yields_the_head_then_an_error() {
        let mut f = Framer::new(65536);
        let head = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: ten\r\n\r\n";
        f.push(head);
        f.push(msg("").as_bytes());
        assert_eq!(
            f.next_frame(),
            Ok(Some(Frame::Unframeable(Bytes::from_static(head))))
        );
        assert_eq!(f.next_frame(), Err(FramingError::BadContentLength));
        let mut g = Framer::new(65536);
        g.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n");
        assert!(matches!(g.next_frame(), Ok(Some(Frame::Unframeable(_)))));
    }

    #[test]
    fn conflicting_content_lengths_yield_the_head_and_stop_the_stream() {
        let mut f = Framer::new(65536);
        let head = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 4\r\nl: 40\r\n\r\n";
        f.push(head);
        f.push(b"abcd");
        f.push(msg("").as_bytes());
        assert_eq!(
            f.next_frame(),
            Ok(Some(Frame::Unframeable(Bytes::from_static(head))))
        );
        assert_eq!(f.next_frame(), Err(FramingError::ConflictingContentLength));
        // The same value twice frames as usual (the parser refuses it with 400).
        let mut g = Framer::new(65536);
        g.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 2\r\nl: 2\r\n\r\nhi");
        assert!(matches!(g.next_frame(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn trailing_space_on_the_request_line_still_frames() {
        let mut f = Framer::new(65536);
        f.push(b"OPTIONS sip:a@b SIP/2.0 \r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn oversize_header_block_and_oversize_body_are_refused() {
        let mut f = Framer::new(1024);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\n");
        f.push(format!("X-Pad: {}\r\n", "a".repeat(2000)).as_bytes());
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge { limit: 1024 }));
        let mut g = Framer::new(1024);
        g.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n");
        assert_eq!(g.next_frame(), Err(FramingError::TooLarge { limit: 1024 }));
    }

    #[test]
    fn double_crlf_is_a_ping_and_single_crlf_is_skipped() {
        let mut f = Framer::new(65536);
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        f.push(b"\r\n");
        assert_eq!(f.next_frame(), Ok(None));
        f.push(msg("").as_bytes());
        assert_eq!(
            f.next_frame(),
            Ok(Some(Frame::Message(Bytes::from(msg("")))))
        );
    }

    #[test]
    fn garbage_stream_is_refused_at_once() {
        let mut f = Framer::new(65536);
        f.push(b"\x16\x03\x01\x00\xa5\x01\x00\x00");
        assert_eq!(f.next_frame(), Err(FramingError::NotSip));
        let mut g = Framer::new(65536);
        g.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(g.next_frame(), Err(FramingError::NotSip));
    }

    #[test]
    fn in_message_ignores_keep_alive_bytes_and_ends_with_the_message() {
        let mut f = Framer::new(65536);
        assert!(!f.in_message());
        f.push(b"\r\n");
        assert!(
            !f.in_message(),
            "a lone CRLF is a keep-alive, not a message"
        );
        let whole = msg("body");
        f.push(&whole.as_bytes()[..10]);
        assert_eq!(f.next_frame(), Ok(None));
        assert!(f.in_message());
        f.push(&whole.as_bytes()[10..]);
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        assert!(!f.in_message());
    }

    #[test]
    fn response_status_line_frames() {
        let mut f = Framer::new(65536);
        f.push(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
    }
}
