//! Calls through handoff with real SIP over UDP: this process is both the
//! carrier (UAC: INVITE with a PCMU offer, ACK, BYE) and the AI agent (UAS:
//! 200 with a PCMU answer, 200 to BYE). Minimal but by the RFC where it
//! matters here: INVITE retransmitted until a provisional (RFC 3261 17.1.1.2,
//! Timer A) and given up after Timer B, the 2xx acknowledged with a new
//! transaction to the Contact, a retransmitted 2xx acknowledged again, a
//! retransmitted INVITE answered with the same 200, BYE retransmitted until
//! answered (Timer E, capped at T2).
//!
//! Call `i` is `c<i>` in the From display name and `+1415555` + 4 digits in
//! the From user, which handoff copies onto the AI leg: that is how the UAS
//! side finds the call an INVITE belongs to.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::rtp::{CallPath, Endpoints};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TIMER_B: Duration = Duration::from_secs(32);
const CALLED: &str = "+18005550100";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Inviting,
    Proceeding,
    Up,
    Failed,
    Ending,
    Ended,
}

struct Call {
    state: State,
    last_sent: Instant,
    interval: Duration,
    first_sent: Instant,
    to_tag: Option<String>,
    contact: Option<SocketAddr>,
    contact_uri: Option<String>,
    caller_dst: Option<SocketAddr>,
    far_dst: Option<SocketAddr>,
    /// The AI leg's 200, kept to answer a retransmitted INVITE.
    ai_ok: Option<(String, SocketAddr)>,
    ai_acked: bool,
    ai_bye: bool,
    status: Option<u16>,
}

/// What setting up and tearing down the calls gave.
#[derive(Debug, Default)]
pub struct Counts {
    pub up: usize,
    pub failed: usize,
    pub statuses: HashMap<u16, usize>,
    pub ended: usize,
    pub bye_unanswered: usize,
    /// BYEs handoff sent to the carrier side during the run (say a media timeout).
    pub target_byes: usize,
}

pub struct SipCalls {
    carrier: UdpSocket,
    uas: UdpSocket,
    target: SocketAddr,
    run: String,
    calls: Vec<Call>,
    by_ai_call_id: HashMap<String, usize>,
    caller_media: Vec<SocketAddr>,
    far_media: Vec<SocketAddr>,
    target_byes: usize,
    buf: Vec<u8>,
}

impl SipCalls {
    /// `uas` is the AI agent's socket (handoff's route points at it);
    /// `target` handoff's SIP address.
    pub fn new(
        target: SocketAddr,
        uas: UdpSocket,
        calls: usize,
        ep: &Endpoints,
    ) -> io::Result<SipCalls> {
        let carrier = UdpSocket::bind((target.ip(), 0))?;
        carrier.set_nonblocking(true)?;
        uas.set_nonblocking(true)?;
        let now = Instant::now();
        Ok(SipCalls {
            carrier,
            uas,
            target,
            run: format!("{:x}", std::process::id()),
            calls: (0..calls)
                .map(|_| Call {
                    state: State::Idle,
                    last_sent: now,
                    interval: T1,
                    first_sent: now,
                    to_tag: None,
                    contact: None,
                    contact_uri: None,
                    caller_dst: None,
                    far_dst: None,
                    ai_ok: None,
                    ai_acked: false,
                    ai_bye: false,
                    status: None,
                })
                .collect(),
            by_ai_call_id: HashMap::new(),
            caller_media: (0..calls).map(|c| ep.caller_addr(c)).collect(),
            far_media: (0..calls).map(|c| ep.far_addr(c)).collect(),
            target_byes: 0,
            buf: vec![0; 65536],
        })
    }

    /// Place every call, `rate` new INVITEs a second, and wait until each is
    /// up on both legs (or failed), at most until `deadline`.
    pub fn setup(&mut self, rate: u32, deadline: Instant) {
        let start = Instant::now();
        let mut placed = 0usize;
        while Instant::now() < deadline {
            let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as usize + 1)
                .min(self.calls.len());
            while placed < due {
                self.send_invite(placed);
                placed += 1;
            }
            self.poll();
            self.retransmit();
            let settled = self.calls.iter().all(|c| match c.state {
                State::Up => c.ai_acked,
                State::Failed => true,
                _ => false,
            });
            if placed == self.calls.len() && settled {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Calls not up by now have failed; a call up on the carrier leg but
        // not (yet) on the AI leg stays up for the teardown's BYE and gets
        // no RTP (`paths`).
        for c in &mut self.calls {
            if c.state != State::Up {
                c.state = State::Failed;
            }
        }
    }

    /// The calls up on both legs, with the relay ports each end sends to,
    /// and the call number of each.
    pub fn paths(&self) -> (Vec<CallPath>, Vec<usize>) {
        let mut paths = Vec::new();
        let mut idx = Vec::new();
        for (i, c) in self.calls.iter().enumerate() {
            if let (State::Up, true, Some(caller_dst), Some(far_dst)) =
                (c.state, c.ai_acked, c.caller_dst, c.far_dst)
            {
                paths.push(CallPath {
                    caller_dst,
                    far_dst,
                });
                idx.push(i);
            }
        }
        (paths, idx)
    }

    /// BYE from the carrier on every call that is up, `rate` a second, until
    /// all are answered or `deadline`.
    pub fn teardown(&mut self, rate: u32, deadline: Instant) -> Counts {
        let up: Vec<usize> = (0..self.calls.len())
            .filter(|&i| self.calls[i].state == State::Up)
            .collect();
        let start = Instant::now();
        let mut sent = 0usize;
        while Instant::now() < deadline {
            let due =
                ((start.elapsed().as_secs_f64() * f64::from(rate)) as usize + 1).min(up.len());
            while sent < due {
                self.send_bye(up[sent]);
                sent += 1;
            }
            self.poll();
            self.retransmit();
            if sent == up.len() && self.calls.iter().all(|c| c.state != State::Ending) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut counts = Counts {
            target_byes: self.target_byes,
            ..Counts::default()
        };
        for c in &self.calls {
            match c.state {
                State::Ended => counts.ended += 1,
                State::Ending => counts.bye_unanswered += 1,
                _ => {}
            }
            if let Some(s) = c.status.filter(|&s| s >= 300) {
                *counts.statuses.entry(s).or_default() += 1;
            }
        }
        counts.up = up.len();
        counts.failed = self.calls.len() - up.len();
        counts
    }

    fn local(&self) -> SocketAddr {
        self.carrier.local_addr().expect("bound")
    }

    fn uas_local(&self) -> SocketAddr {
        self.uas.local_addr().expect("bound")
    }

    fn our_from(&self, i: usize) -> String {
        format!(
            "\"c{i}\" <sip:+1415555{:04}@{}>;tag=f{}x{i}",
            i % 10_000,
            self.local().ip(),
            self.run
        )
    }

    fn call_id(&self, i: usize) -> String {
        format!("{}-{i}@rtp-load", self.run)
    }

    fn send_invite(&mut self, i: usize) {
        let body = sdp_body(&format!("load{i}"), self.caller_media[i]);
        let local = self.local();
        let msg = format!(
            "INVITE sip:{CALLED}@{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{run}x{i}i;rport\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: <sip:{CALLED}@{target}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:+1415555{num:04}@{local}>\r\n\
             User-Agent: handoff-rtp-load\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            target = self.target,
            run = self.run,
            from = self.our_from(i),
            cid = self.call_id(i),
            num = i % 10_000,
            len = body.len(),
        );
        let _ = self.carrier.send_to(msg.as_bytes(), self.target);
        let now = Instant::now();
        let c = &mut self.calls[i];
        if c.state == State::Idle {
            c.state = State::Inviting;
            c.first_sent = now;
            c.interval = T1;
        }
        c.last_sent = now;
    }

    fn in_dialog(&self, i: usize, method: &str, cseq: u32, branch: &str) -> Option<Vec<u8>> {
        let c = &self.calls[i];
        let msg = format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{run}x{i}{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: <sip:{CALLED}@{target}>;tag={tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            uri = c.contact_uri.as_deref()?,
            local = self.local(),
            run = self.run,
            from = self.our_from(i),
            target = self.target,
            tag = c.to_tag.as_deref()?,
            cid = self.call_id(i),
        );
        Some(msg.into_bytes())
    }

    fn send_ack(&mut self, i: usize) {
        if let Some(msg) = self.in_dialog(i, "ACK", 1, "a") {
            let to = self.calls[i].contact.unwrap_or(self.target);
            let _ = self.carrier.send_to(&msg, to);
        }
    }

    fn send_bye(&mut self, i: usize) {
        if let Some(msg) = self.in_dialog(i, "BYE", 2, "b") {
            let to = self.calls[i].contact.unwrap_or(self.target);
            let _ = self.carrier.send_to(&msg, to);
            let now = Instant::now();
            let c = &mut self.calls[i];
            if c.state == State::Up {
                c.state = State::Ending;
                c.first_sent = now;
                c.interval = T1;
            }
            c.last_sent = now;
        }
    }

    fn retransmit(&mut self) {
        let now = Instant::now();
        for i in 0..self.calls.len() {
            let c = &mut self.calls[i];
            let waiting = matches!(c.state, State::Inviting | State::Ending);
            if !waiting || now.duration_since(c.last_sent) < c.interval {
                continue;
            }
            if now.duration_since(c.first_sent) >= TIMER_B {
                c.state = if c.state == State::Inviting {
                    State::Failed
                } else {
                    State::Ended
                };
                c.status = Some(408);
                continue;
            }
            let inviting = c.state == State::Inviting;
            // Timer A doubles without a cap; Timer E stops at T2.
            c.interval = if inviting {
                c.interval * 2
            } else {
                (c.interval * 2).min(T2)
            };
            if inviting {
                self.send_invite(i);
            } else {
                self.send_bye(i);
            }
        }
    }

    /// Handle everything that has arrived on both sockets. Called between
    /// RTP ticks too, so a late retransmission or a BYE is answered.
    pub fn poll(&mut self) {
        while let Ok((n, from)) = self.carrier.recv_from(&mut self.buf) {
            let msg = self.buf[..n].to_vec();
            self.on_carrier(&msg, from);
        }
        while let Ok((n, from)) = self.uas.recv_from(&mut self.buf) {
            let msg = self.buf[..n].to_vec();
            self.on_uas(&msg, from);
        }
    }

    fn call_of(&self, call_id: &str) -> Option<usize> {
        let rest = call_id.strip_prefix(&self.run)?.strip_prefix('-')?;
        let i: usize = rest.strip_suffix("@rtp-load")?.parse().ok()?;
        (i < self.calls.len()).then_some(i)
    }

    fn on_carrier(&mut self, raw: &[u8], from: SocketAddr) {
        let Some(m) = Msg::parse(raw) else { return };
        let Some(i) = m.header("call-id").and_then(|c| self.call_of(c)) else {
            return;
        };
        let Some(code) = m.status else {
            // A request from handoff on the carrier leg: only BYE is expected.
            if m.method == "BYE" {
                self.target_byes += 1;
                self.calls[i].state = State::Ended;
                let ok = m.response(200, "OK", None, None);
                let _ = self.carrier.send_to(ok.as_bytes(), from);
            }
            return;
        };
        let method = m.cseq_method();
        let c = &mut self.calls[i];
        match (method, code) {
            ("INVITE", 100..=199) if c.state == State::Inviting => c.state = State::Proceeding,
            ("INVITE", 100..=199) => {}
            ("INVITE", 200..=299) => {
                if matches!(c.state, State::Inviting | State::Proceeding) {
                    c.to_tag = m.tag("to");
                    c.contact_uri = m.header("contact").map(contact_uri);
                    c.contact = c.contact_uri.as_deref().and_then(uri_addr);
                    c.caller_dst = sdp_addr(m.body);
                    c.state = State::Up;
                }
                self.send_ack(i);
            }
            ("INVITE", _) => {
                // RFC 3261 17.1.1.3: the ACK of a non-2xx is the INVITE's own branch.
                let ack = format!(
                    "ACK sip:{CALLED}@{target} SIP/2.0\r\n\
                     Via: SIP/2.0/UDP {local};branch=z9hG4bK{run}x{i}i;rport\r\n\
                     Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
                     CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                    target = self.target,
                    local = self.local(),
                    run = self.run,
                    from = self.our_from(i),
                    to = m.header("to").unwrap_or(""),
                    cid = self.call_id(i),
                );
                let _ = self.carrier.send_to(ack.as_bytes(), from);
                let c = &mut self.calls[i];
                c.state = State::Failed;
                c.status = Some(code);
            }
            ("BYE", 200..=699) if c.state == State::Ending => {
                c.state = State::Ended;
                if code >= 300 {
                    c.status = Some(code);
                }
            }
            _ => {}
        }
    }

    fn on_uas(&mut self, raw: &[u8], from: SocketAddr) {
        let Some(m) = Msg::parse(raw) else { return };
        if m.status.is_some() {
            return;
        }
        let Some(call_id) = m.header("call-id").map(str::to_owned) else {
            return;
        };
        let known = self.by_ai_call_id.get(&call_id).copied();
        match m.method {
            "INVITE" => {
                let i = match known {
                    Some(i) => i,
                    None => match m.header("from").and_then(call_index) {
                        Some(i) if i < self.calls.len() => {
                            self.by_ai_call_id.insert(call_id, i);
                            i
                        }
                        _ => {
                            let r = m.response(404, "Not Found", None, None);
                            let _ = self.uas.send_to(r.as_bytes(), from);
                            return;
                        }
                    },
                };
                if let Some((ok, to)) = &self.calls[i].ai_ok {
                    let _ = self.uas.send_to(ok.as_bytes(), *to);
                    return;
                }
                self.calls[i].far_dst = sdp_addr(m.body);
                let body = sdp_body(&format!("agent{i}"), self.far_media[i]);
                let contact = format!("<sip:ai@{}>", self.uas_local());
                let tag = format!("a{}x{i}", self.run);
                let ok = m.response(200, "OK", Some(&tag), Some((&contact, &body)));
                let _ = self.uas.send_to(ok.as_bytes(), from);
                self.calls[i].ai_ok = Some((ok, from));
            }
            "ACK" => {
                if let Some(i) = known {
                    self.calls[i].ai_acked = true;
                }
            }
            "BYE" => {
                if let Some(i) = known {
                    self.calls[i].ai_bye = true;
                }
                let r = m.response(200, "OK", None, None);
                let _ = self.uas.send_to(r.as_bytes(), from);
            }
            "CANCEL" | "OPTIONS" | "INFO" | "UPDATE" => {
                let r = m.response(200, "OK", None, None);
                let _ = self.uas.send_to(r.as_bytes(), from);
            }
            _ => {}
        }
    }

    /// How many calls saw a BYE on the AI leg.
    pub fn ai_byes(&self) -> usize {
        self.calls.iter().filter(|c| c.ai_bye).count()
    }
}

fn sdp_body(user: &str, media: SocketAddr) -> String {
    format!(
        "v=0\r\no={user} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = media.ip(),
        port = media.port()
    )
}

/// The audio stream's address in an SDP: the last c= before or in the first
/// m=audio section, and that m= line's port.
pub fn sdp_addr(body: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(body).ok()?;
    let mut ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.split('/').next()?.trim().parse().ok();
        } else if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break;
            }
            if m.starts_with("audio ") {
                port = m.split_whitespace().nth(1)?.parse().ok();
            }
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

// `"c12" <sip:...>;tag=...` -> 12, else the last 4 digits of the user.
fn call_index(from: &str) -> Option<usize> {
    let name = from.trim_start().strip_prefix("\"c")?;
    name.split('"').next()?.parse().ok()
}

fn contact_uri(v: &str) -> String {
    let v = v.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_owned(),
        _ => v.split(';').next().unwrap_or(v).to_owned(),
    }
}

// sip:user@1.2.3.4:5060;params -> 1.2.3.4:5060 (IP literals only).
fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri.strip_prefix("sip:")?;
    let host = rest.rsplit('@').next()?;
    let host = host.split(';').next()?;
    host.parse().ok()
}

/// Just enough of a SIP message: start line, headers by (lower-case,
/// compact forms expanded) name, body.
struct Msg<'a> {
    status: Option<u16>,
    method: &'a str,
    headers: Vec<(String, &'a str)>,
    body: &'a [u8],
}

impl<'a> Msg<'a> {
    fn parse(raw: &'a [u8]) -> Option<Msg<'a>> {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&raw[..split]).ok()?;
        let mut lines = head.split("\r\n");
        let start = lines.next()?;
        let (status, method) = if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
            (Some(rest.get(..3)?.parse().ok()?), "")
        } else {
            (None, start.split(' ').next()?)
        };
        let headers = lines
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                let name = name.trim().to_ascii_lowercase();
                let name = match name.as_str() {
                    "i" => "call-id".to_owned(),
                    "f" => "from".to_owned(),
                    "t" => "to".to_owned(),
                    "v" => "via".to_owned(),
                    "m" => "contact".to_owned(),
                    "l" => "content-length".to_owned(),
                    _ => name,
                };
                Some((name, value.trim()))
            })
            .collect();
        let len = raw.len() - split - 4;
        Some(Msg {
            status,
            method,
            headers,
            body: &raw[split + 4..split + 4 + len],
        })
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    fn tag(&self, name: &str) -> Option<String> {
        let v = self.header(name)?;
        let at = v.find(";tag=")?;
        Some(v[at + 5..].split(';').next()?.trim().to_owned())
    }

    fn cseq_method(&self) -> &'a str {
        self.header("cseq")
            .and_then(|v| v.split_whitespace().nth(1))
            .unwrap_or("")
    }

    /// A response to this request: its Vias, From, To (with `tag` added when
    /// it has none), Call-ID and CSeq; optionally a Contact and an SDP body.
    fn response(
        &self,
        code: u16,
        reason: &str,
        tag: Option<&str>,
        contact_and_sdp: Option<(&str, &str)>,
    ) -> String {
        let mut r = format!("SIP/2.0 {code} {reason}\r\n");
        for (n, v) in &self.headers {
            if n == "via" {
                r.push_str(&format!("Via: {v}\r\n"));
            }
        }
        let to = self.header("to").unwrap_or("");
        let to = match tag {
            Some(t) if !to.contains(";tag=") => format!("{to};tag={t}"),
            _ => to.to_owned(),
        };
        r.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            self.header("from").unwrap_or(""),
            self.header("call-id").unwrap_or(""),
            self.header("cseq").unwrap_or(""),
        ));
        match contact_and_sdp {
            Some((contact, sdp)) => r.push_str(&format!(
                "Contact: {contact}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )),
            None => r.push_str("Content-Length: 0\r\n\r\n"),
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_address_of_the_audio_stream() {
        let sdp = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30002 RTP/AVP 0\r\na=rtcp:30003\r\n";
        assert_eq!(sdp_addr(sdp), Some("127.0.0.1:30002".parse().unwrap()));
    }

    #[test]
    fn call_index_from_display_name() {
        assert_eq!(
            call_index("\"c42\" <sip:+14155550042@127.0.0.1>;tag=x"),
            Some(42)
        );
        assert_eq!(call_index("<sip:a@b>"), None);
    }
}
