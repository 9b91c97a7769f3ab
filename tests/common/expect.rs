//! The test UA's receive side: pulling what the background tasks queued, with
//! deadlines, expectations that keep what they skip for later, and the history of
//! everything received for failure messages.

use super::ua::Event;
use super::{Received, TestUa};
use handoff::sip::message::{generate_tag, Message, Method};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

impl TestUa {
    /// The next event from the background tasks, by `deadline`.
    async fn next_event(&mut self, deadline: Instant) -> Option<Received> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(Event::Msg(r))) => {
                    self.note(&r);
                    return Some(*r);
                }
                Ok(Some(Event::Unparsed(u))) => {
                    let first = u.text.lines().next().unwrap_or("").to_owned();
                    let at = self.started.elapsed().as_millis();
                    self.history
                        .push(format!("{at:>5} ms  [unparsable: {}] {first}", u.error));
                    self.unparsed.push(u);
                }
                Ok(Some(Event::Accepted(a))) => self.accepted.push(a),
                Ok(Some(Event::Closed(a))) => {
                    let at = self.started.elapsed().as_millis();
                    self.history
                        .push(format!("{at:>5} ms  [connection from {a} closed]"));
                    self.closed.push(a);
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    fn note(&mut self, r: &Received) {
        self.last_from = Some(r.from);
        self.history.push(format!(
            "{:>5} ms  {}",
            r.at.duration_since(self.started).as_millis(),
            summary(&r.msg)
        ));
    }

    /// Everything received so far, one line each, for failure messages.
    pub fn history(&self) -> String {
        let mut s = String::new();
        for line in &self.history {
            let _ = writeln!(s, "    {line}");
        }
        if s.is_empty() {
            s.push_str("    (nothing)\n");
        }
        s
    }

    /// The next message (the backlog first), or None by `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Received> {
        if let Some(r) = self.backlog.pop_front() {
            return Some(r);
        }
        self.next_event(Instant::now() + timeout).await
    }

    /// Wait for a message `take` accepts. Messages `skip` accepts are dropped, the rest
    /// are kept in the backlog for later expectations. Panics with the history on timeout.
    pub async fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        take: impl Fn(&Message) -> bool,
        skip: impl Fn(&Message) -> bool,
    ) -> Received {
        if let Some(pos) = self.backlog.iter().position(|r| take(&r.msg)) {
            return self.backlog.remove(pos).unwrap();
        }
        self.backlog.retain(|r| !skip(&r.msg));
        let deadline = Instant::now() + timeout;
        while let Some(r) = self.next_event(deadline).await {
            if take(&r.msg) {
                return r;
            }
            if !skip(&r.msg) {
                self.backlog.push_back(r);
            }
        }
        panic!(
            "{} UA at {}: expected {what} within {timeout:?}; received:\n{}",
            self.transport.via_name(),
            self.local,
            self.history()
        );
    }

    /// The next request of `method`; other messages wait in the backlog.
    pub async fn expect_request(&mut self, method: Method, timeout: Duration) -> Received {
        let what = format!("a {method} request");
        self.expect(&what, timeout, |m| m.method() == Some(&method), |_| false)
            .await
    }

    /// The next `method` request whose Request-URI carries URI headers
    /// (`?name=value&...`), which handoff's strict parser refuses as a request it
    /// receives (RFC 3261 19.1.5) but a destination's header contract may ask
    /// for: the request with the headers taken off its Request-URI, and the URI
    /// header part as sent. A request without them is returned as it is, with "".
    pub async fn expect_request_with_uri_headers(
        &mut self,
        method: Method,
        timeout: Duration,
    ) -> (Received, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.unparsed.iter().position(|u| {
                u.text
                    .lines()
                    .next()
                    .is_some_and(|l| l.starts_with(&format!("{method} ")) && l.contains('?'))
            }) {
                let u = self.unparsed.remove(i);
                let (line, rest) = u.text.split_once("\r\n").unwrap_or((&u.text, ""));
                let mut parts = line.splitn(3, ' ');
                let (m, uri, version) = (
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                );
                let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
                let text = format!("{m} {base} {version}\r\n{rest}");
                let msg = handoff::sip::message::parse(bytes::Bytes::from(text))
                    .unwrap_or_else(|e| panic!("{method} without its URI headers: {e:?}"));
                let r = Received {
                    msg,
                    from: u.from,
                    at: Instant::now(),
                };
                return (r, query.to_owned());
            }
            if let Some(pos) = self
                .backlog
                .iter()
                .position(|r| r.msg.method() == Some(&method))
            {
                if let Some(r) = self.backlog.remove(pos) {
                    return (r, String::new());
                }
            }
            // Short waits: an unparsable message is kept aside, not returned.
            let slice = deadline.min(Instant::now() + Duration::from_millis(50));
            match self.next_event(slice).await {
                Some(r) if r.msg.method() == Some(&method) => return (r, String::new()),
                Some(r) => self.backlog.push_back(r),
                None if Instant::now() >= deadline => panic!(
                    "UA at {}: no {method} within {timeout:?}; received:\n{}",
                    self.local_addr(),
                    self.history.join("\n")
                ),
                None => {}
            }
        }
    }

    /// The next response with `status` (whatever it answers). While waiting for a final
    /// response, provisional ones are dropped.
    pub async fn expect_response(&mut self, status: u16, timeout: Duration) -> Received {
        let what = format!("a {status} response");
        self.expect(
            &what,
            timeout,
            |m| m.status() == Some(status),
            |m| status >= 200 && is_provisional(m),
        )
        .await
    }

    /// The next response with `status` to a request of `method` (by CSeq).
    pub async fn expect_response_to(
        &mut self,
        method: Method,
        status: u16,
        timeout: Duration,
    ) -> Received {
        let what = format!("a {status} response to {method}");
        let answers = move |m: &Message| m.cseq().is_some_and(|c| c.method == method);
        self.expect(
            &what,
            timeout,
            |m| m.status() == Some(status) && answers(m),
            |m| status >= 200 && is_provisional(m) && answers(m),
        )
        .await
    }

    /// The next message with this status whether it parses or not (a 400 to a request
    /// with a broken CSeq copies the broken CSeq). Returns its start line.
    pub async fn expect_status_line(&mut self, status: u16, timeout: Duration) -> String {
        let wanted = format!("SIP/2.0 {status} ");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self
                .unparsed
                .iter()
                .position(|u| u.text.starts_with(&wanted))
            {
                let u = self.unparsed.remove(pos);
                return u.text.lines().next().unwrap_or("").to_owned();
            }
            if let Some(pos) = self
                .backlog
                .iter()
                .position(|r| r.msg.status() == Some(status))
            {
                let r = self.backlog.remove(pos).unwrap();
                return format!("SIP/2.0 {status} {}", r.msg.reason().unwrap_or(""));
            }
            match self.next_event(deadline).await {
                Some(r) => self.backlog.push_back(r),
                None if self.unparsed.iter().any(|u| u.text.starts_with(&wanted)) => {}
                None => panic!(
                    "UA at {}: expected a {status} response (parsed or not) within {timeout:?}; received:\n{}",
                    self.local,
                    self.history()
                ),
            }
        }
    }

    /// Everything in the backlog plus whatever arrives within `window`.
    pub async fn collect(&mut self, window: Duration) -> Vec<Received> {
        let mut out: Vec<Received> = self.backlog.drain(..).collect();
        let deadline = Instant::now() + window;
        while let Some(r) = self.next_event(deadline).await {
            out.push(r);
        }
        out
    }

    /// Assert that nothing `bad` accepts arrives within `window`; the rest is kept.
    pub async fn expect_silence(
        &mut self,
        what: &str,
        window: Duration,
        bad: impl Fn(&Message) -> bool,
    ) {
        for r in self.collect(window).await {
            if bad(&r.msg) {
                panic!(
                    "UA at {}: expected no {what} within {window:?}, got:\n{}\nreceived:\n{}",
                    self.local,
                    String::from_utf8_lossy(&r.msg.to_bytes()),
                    self.history()
                );
            }
            self.backlog.push_back(r);
        }
    }

    pub fn clear_backlog(&mut self) {
        self.backlog.clear();
    }

    /// Wait until a TCP connection of this UA is closed by the far end.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.closed.is_empty() {
            match self.next_event(deadline).await {
                Some(r) => self.backlog.push_back(r),
                None => break,
            }
        }
        !self.closed.is_empty()
    }

    /// Make sure handoff has taken in everything this UA sent before: an out-of-dialog
    /// OPTIONS on the same socket or connection is answered only after the messages
    /// ahead of it were handed to their calls (in order), so anything another UA sends
    /// afterwards queues behind them.
    pub async fn barrier(&mut self) {
        let call_id = format!("barrier-{}", generate_tag());
        let text = format!(
            "OPTIONS sip:handoff@{{handoff}} SIP/2.0\nVia: {{via}}\nMax-Forwards: 70\nFrom: <sip:barrier@test>;tag={{tag}}\nTo: <sip:handoff@{{handoff}}>\nCall-ID: {call_id}\nCSeq: 1 OPTIONS\n\n"
        );
        self.send_raw(&text).await;
        self.expect(
            "the 200 to the barrier OPTIONS",
            Duration::from_secs(2),
            |m| m.call_id() == Some(call_id.as_str()) && m.status().is_some_and(|s| s >= 200),
            |_| false,
        )
        .await;
    }

    /// How many TCP connections this (listening) UA has accepted so far.
    pub async fn accepted_connections(&mut self) -> usize {
        // Pick up events already queued without waiting.
        while let Some(r) = self.next_event(Instant::now()).await {
            self.backlog.push_back(r);
        }
        self.accepted.len()
    }
}

fn is_provisional(m: &Message) -> bool {
    m.status().is_some_and(|s| s < 200)
}

/// One line naming a message: start line, Call-ID and CSeq.
pub fn summary(m: &Message) -> String {
    let start = match (m.method(), m.status()) {
        (Some(method), _) => format!("{method} {}", m.request_uri().unwrap_or("")),
        (None, Some(status)) => format!("{status} {}", m.reason().unwrap_or("")),
        _ => "?".into(),
    };
    format!(
        "{start}  (CSeq: {}, Call-ID: {})",
        m.header("CSeq").unwrap_or("-"),
        m.call_id().unwrap_or("-")
    )
}
