//! The registration task of one trunk: moves the machine's bytes. It builds each
//! REGISTER the machine asks for, sends it through a `TransactionSet` (retransmissions,
//! Timer F), takes the responses the dispatcher routes to it by Call-ID (`Routes`),
//! keeps the trunk's metrics, and on stop unregisters within a bound.

use super::machine::{Action, Event, Outcome, Params, RegisterMachine, Request, Response};
use crate::config::registration::Registration;
use crate::metrics::Metrics;
use crate::sip::message::{
    bracket_v6, generate_branch, generate_call_id, generate_tag, Message, Method, Via,
};
use crate::sip::transaction::{TimerConfig, TransactionSet, TxEvent, TxId};
use crate::sip::transport::{Peer, TransportLayer};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Challenge headers read from one response.
const MAX_CHALLENGES: usize = 8;

/// Call-ID to the registration task that owns it: where the dispatcher hands the
/// responses no call claims.
#[derive(Default)]
pub struct Routes(Mutex<HashMap<String, mpsc::Sender<Message>>>);

impl Routes {
    /// Hand `msg` to the task of its Call-ID; false (and `msg` dropped) when none
    /// owns it.
    pub fn deliver(&self, msg: Message) -> bool {
        let tx = {
            let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match msg.call_id().and_then(|c| map.get(c)) {
                Some(tx) => tx.clone(),
                None => return false,
            }
        };
        // A full queue drops the response: the transaction retransmits or times out.
        let _ = tx.try_send(msg);
        true
    }

    fn add(&self, call_id: String, tx: mpsc::Sender<Message>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(call_id, tx);
    }

    fn remove(&self, call_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(call_id);
    }
}

/// What a registration task needs from the server.
pub struct RegisterContext {
    pub transport: Arc<TransportLayer>,
    pub routes: Arc<Routes>,
    pub metrics: Arc<Metrics>,
    pub timers: TimerConfig,
    pub user_agent: String,
    pub advertised_host: Option<String>,
}

/// A running registration; `stop` unregisters.
pub struct RegisterHandle {
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

impl RegisterHandle {
    /// End the task at once, without unregistering.
    pub fn abort(self) {
        self.join.abort();
    }

    /// Unregister (Expires: 0) and wait for it, at most `limit`.
    pub async fn stop(self, limit: Duration) {
        let _ = self.stop.send(true);
        let mut join = self.join;
        if tokio::time::timeout(limit, &mut join).await.is_err() {
            join.abort();
        }
    }
}

/// Start registering trunk `index` (named `trunk`).
pub fn spawn(
    index: usize,
    trunk: String,
    reg: Registration,
    ctx: RegisterContext,
    unregister_limit: Duration,
) -> RegisterHandle {
    let (stop, stop_rx) = watch::channel(false);
    let join = tokio::spawn(async move {
        let mut runner = Runner::new(index, trunk, reg, ctx);
        runner.run(stop_rx, unregister_limit).await;
    });
    RegisterHandle { stop, join }
}

struct Runner {
    index: usize,
    trunk: String,
    reg: Registration,
    ctx: RegisterContext,
    machine: RegisterMachine,
    set: TransactionSet,
    call_id: String,
    from_tag: String,
    peer: Option<Peer>,
    /// Client transactions in flight and the CSeq each carries.
    in_flight: Vec<(TxId, u32)>,
}

impl Runner {
    fn new(index: usize, trunk: String, reg: Registration, ctx: RegisterContext) -> Runner {
        let params = Params {
            request_uri: reg.registrar.as_str().to_owned(),
            expires: reg.expires_secs,
            credentials: reg.credentials.clone(),
        };
        let now = Instant::now().into_std();
        Runner {
            index,
            trunk,
            machine: RegisterMachine::new(params, now, rand::random()),
            set: TransactionSet::new(ctx.timers),
            reg,
            ctx,
            call_id: generate_call_id(),
            from_tag: generate_tag(),
            peer: None,
            in_flight: Vec::new(),
        }
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>, unregister_limit: Duration) {
        let (tx, mut rx) = mpsc::channel(16);
        self.ctx.routes.add(self.call_id.clone(), tx);
        let mut deadline: Option<Instant> = None;
        tracing::info!(trunk = %self.trunk, registrar = %self.reg.registrar, "registering");
        loop {
            let wake = [
                self.machine.next_wakeup().map(Instant::from_std),
                self.set.next_deadline().map(Instant::from_std),
                deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            let mut events = VecDeque::new();
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let mut out = Vec::new();
                    let _stray = self.set.on_response(msg, Instant::now().into_std(), &mut out);
                    self.tx_events(out, &mut events);
                }
                changed = stop.changed(), if deadline.is_none() => {
                    let _ = changed;
                    deadline = Some(Instant::now() + unregister_limit);
                    events.push_back(Event::Shutdown);
                }
                _ = sleep_until(wake) => {
                    let mut out = Vec::new();
                    self.set.on_tick(Instant::now().into_std(), &mut out);
                    self.tx_events(out, &mut events);
                    events.push_back(Event::Tick);
                }
            }
            self.pump(events).await;
            if self.machine.is_done() || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        self.ctx.routes.remove(&self.call_id);
        if let Some(c) = self.ctx.metrics.trunks.get(self.index) {
            c.registered.store(0, Ordering::Relaxed);
            c.registration_expires_seconds.store(0, Ordering::Relaxed);
        }
        tracing::info!(trunk = %self.trunk, "registration task ended");
    }

    /// Feed events to the machine and carry out its actions until none is left.
    async fn pump(&mut self, mut events: VecDeque<Event>) {
        while let Some(ev) = events.pop_front() {
            let now = Instant::now().into_std();
            for action in self.machine.handle(now, ev) {
                match action {
                    Action::Send(req) => self.send(req, &mut events).await,
                    Action::Registered { expires } => self.registered(expires),
                    Action::Unregistered => {
                        tracing::info!(trunk = %self.trunk, "not registered");
                        self.gauge(0, 0);
                    }
                    Action::Count(o) => self.count(o),
                    Action::Failure(why) => {
                        // The peer, not its credentials, is logged.
                        self.peer = None;
                        tracing::warn!(trunk = %self.trunk, registrar = %self.reg.registrar, why, "REGISTER failed");
                    }
                    Action::Done => {}
                }
            }
        }
    }

    fn registered(&self, expires: u32) {
        tracing::info!(trunk = %self.trunk, expires, "registered");
        self.gauge(1, i64::from(expires));
    }

    fn gauge(&self, up: i64, expires: i64) {
        if let Some(c) = self.ctx.metrics.trunks.get(self.index) {
            c.registered.store(up, Ordering::Relaxed);
            c.registration_expires_seconds
                .store(expires, Ordering::Relaxed);
        }
    }

    fn count(&self, o: Outcome) {
        let Some(c) = self.ctx.metrics.trunks.get(self.index) else {
            return;
        };
        let counter = match o {
            Outcome::Ok => &c.registrations_ok_total,
            Outcome::Failed => &c.registrations_failed_total,
            Outcome::Challenged => &c.registrations_challenged_total,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    async fn send(&mut self, req: Request, events: &mut VecDeque<Event>) {
        let peer = match self.peer {
            Some(p) => p,
            None => match self.ctx.transport.peer_for(&self.reg.registrar).await {
                Ok(t) => {
                    self.peer = Some(t.peer());
                    t.peer()
                }
                Err(e) => {
                    tracing::debug!(trunk = %self.trunk, error = %e, "registrar not reachable");
                    events.push_back(Event::Failed { cseq: req.cseq });
                    return;
                }
            },
        };
        let msg = self.build(&req, peer);
        let mut out = Vec::new();
        let id = self
            .set
            .start_client(msg, peer, Instant::now().into_std(), &mut out);
        self.in_flight.push((id, req.cseq));
        self.tx_events(out, events);
    }

    /// Our host and port for messages to `peer` (as the calls choose theirs).
    fn local(&self, peer: Peer) -> (String, u16) {
        let local = self.ctx.transport.local_addr_for(peer.transport, peer.addr);
        let port = local.map_or(5060, |a| a.port());
        let host = match &self.ctx.advertised_host {
            Some(h) => h.clone(),
            None => local.map_or_else(|| "127.0.0.1".to_owned(), |a| a.ip().to_string()),
        };
        (host, port)
    }

    fn contact_uri(&self, peer: Peer) -> String {
        let (host, port) = self.local(peer);
        format!(
            "sip:{}@{}:{port}{}",
            self.reg.contact_user,
            bracket_v6(&host),
            peer.transport.uri_param()
        )
    }

    fn build(&self, req: &Request, peer: Peer) -> Message {
        let (host, port) = self.local(peer);
        let aor = self.reg.aor.as_str();
        let mut m = Message::request(Method::Register, self.reg.registrar.as_str());
        m.push(
            "Via",
            Via::ours(peer.transport.via_name(), &host, port, &generate_branch()),
        );
        m.push("Max-Forwards", "70");
        m.push("From", format!("<{aor}>;tag={}", self.from_tag));
        m.push("To", format!("<{aor}>"));
        m.push("Call-ID", self.call_id.clone());
        m.push("CSeq", format!("{} REGISTER", req.cseq));
        m.push(
            "Contact",
            format!("<{}>;expires={}", self.contact_uri(peer), req.expires),
        );
        m.push("Expires", req.expires.to_string());
        if let Some((name, value)) = &req.authorization {
            m.push(name, value.clone());
        }
        m.push("User-Agent", self.ctx.user_agent.clone());
        m
    }

    fn tx_events(&mut self, out: Vec<TxEvent>, events: &mut VecDeque<Event>) {
        let mut queue: VecDeque<TxEvent> = out.into();
        while let Some(ev) = queue.pop_front() {
            match ev {
                TxEvent::Send(id, peer, bytes) => {
                    if self.ctx.transport.send(&peer, bytes).is_err() {
                        let mut more = Vec::new();
                        self.set
                            .on_transport_error(id, Instant::now().into_std(), &mut more);
                        queue.extend(more);
                    }
                }
                TxEvent::Response(_, resp) => {
                    let peer = self.peer;
                    let ours = peer.map(|p| self.contact_uri(p));
                    events.push_back(Event::Response(read_response(&resp, ours.as_deref())));
                }
                TxEvent::Timeout(id) | TxEvent::TransportError(id) => {
                    if let Some(&(_, cseq)) = self.in_flight.iter().find(|(i, _)| *i == id) {
                        events.push_back(Event::Failed { cseq });
                    }
                }
                TxEvent::Terminated(id) => self.in_flight.retain(|(i, _)| *i != id),
                TxEvent::AckOf2xx(..) => {}
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the machine needs of a response: status, CSeq, the expiry granted to our
/// Contact (its `expires` parameter, else the `Expires` header), `Min-Expires`,
/// `Retry-After`, and the challenges.
pub fn read_response(resp: &Message, our_contact: Option<&str>) -> Response {
    let status = resp.status().unwrap_or(0);
    let number = |name: &str| {
        resp.header(name).and_then(|v| {
            let digits: String = v
                .trim()
                .chars()
                .take_while(char::is_ascii_digit)
                .take(10)
                .collect();
            digits.parse::<u32>().ok()
        })
    };
    let contact_expires = our_contact.and_then(|ours| {
        resp.header_values("Contact")
            .find(|c| c.contains(ours))
            .and_then(|c| {
                c.split(';').find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("expires")
                        .then(|| v.trim().trim_matches('"').parse::<u32>().ok())
                        .flatten()
                })
            })
    });
    let challenge_header = match status {
        401 => Some("WWW-Authenticate"),
        407 => Some("Proxy-Authenticate"),
        _ => None,
    };
    let challenges = challenge_header
        .map(|name| {
            resp.headers()
                .iter()
                .filter(|h| h.name().is(name))
                .take(MAX_CHALLENGES)
                .map(|h| h.value().to_owned())
                .collect()
        })
        .unwrap_or_default();
    Response {
        status,
        cseq: resp.cseq().map_or(0, |c| c.seq),
        expires: contact_expires.or_else(|| number("Expires")),
        min_expires: number("Min-Expires"),
        retry_after: number("Retry-After"),
        challenges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message {
        crate::sip::message::parse(bytes::Bytes::from(text.replace('\n', "\r\n"))).expect("parses")
    }

    const HEAD: &str = "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\nFrom: <sip:a@b>;tag=1\nTo: <sip:a@b>;tag=2\nCall-ID: c1\n";

    #[test]
    fn the_grant_for_our_contact_wins_over_the_expires_header() {
        let r = parse(&format!(
            "SIP/2.0 200 OK\n{HEAD}CSeq: 4 REGISTER\nContact: <sip:other@10.0.0.1>;expires=999\nContact: <sip:handoff@127.0.0.1:5070>;expires=120\nExpires: 600\nContent-Length: 0\n\n"
        ));
        let got = read_response(&r, Some("sip:handoff@127.0.0.1:5070"));
        assert_eq!((got.status, got.cseq, got.expires), (200, 4, Some(120)));
        let got = read_response(&r, Some("sip:nobody@127.0.0.1:1"));
        assert_eq!(got.expires, Some(600));
    }

    #[test]
    fn challenges_min_expires_and_retry_after_are_read_and_garbage_is_none() {
        let r = parse(&format!(
            "SIP/2.0 401 Unauthorized\n{HEAD}CSeq: 1 REGISTER\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\"\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n1\"\nContent-Length: 0\n\n"
        ));
        let got = read_response(&r, None);
        assert_eq!(got.challenges.len(), 2);
        assert!(got.challenges[0].contains("SHA-256"));
        let r = parse(&format!(
            "SIP/2.0 503 Busy\n{HEAD}CSeq: 1 REGISTER\nRetry-After: 120 (maintenance)\nMin-Expires: lots\nContent-Length: 0\n\n"
        ));
        let got = read_response(&r, None);
        assert_eq!((got.retry_after, got.min_expires), (Some(120), None));
    }
}
