//! The whole multi-node deployment as processes (issue 13, "How it is shown"):
//! `redis-server`, Kamailio with the shipped configuration, and two handoff
//! nodes, each the real binary on its own config, `cluster.node_id`, SQLite
//! store and loopback address, sharing one Redis under one key prefix. One AI
//! agent UA serves both nodes (the source of its INVITE says which node took
//! the call), one UA plays Zendesk (the transfer destination "zendesk"), one
//! capture server subscribes to both nodes' lifecycle events, and the caller
//! reaches Kamailio's address only. Every process is stopped by its PID when
//! the cluster is dropped, also on a panic.

use super::capture::{Capture, Captured, Reply};
use super::kamailio::{call_with, hang_up, wait_up, EdgeCall, Kamailio, EDGE_WAIT};
use super::node_proc::{NodeAddrs, NodeProc, SIGNING_SECRET};
use super::redis::RedisServer;
use super::{config_text, InviteOpts, Received, TestUa, Transport};
use handoff::sip::message::{Message, Method};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The lifecycle-event subscriber's secret in both nodes' configs.
pub const EVENTS_SECRET: &str = "full-cluster-events-secret-0123456";

/// Seconds between Kamailio's OPTIONS probes.
pub const PING_SECS: u64 = 1;

/// Session record TTL of the nodes (the smallest the config accepts).
pub const RECORD_TTL_SECS: u64 = 3;

/// `cluster.node_timeout_secs`: a node silent this long has its calls ended by
/// the other (heartbeats every 200 ms).
pub const NODE_TIMEOUT_SECS: u64 = 2;

pub struct FullCluster {
    /// The nodes, "node-a" and "node-b", in Kamailio's dispatcher list.
    pub nodes: Vec<NodeProc>,
    pub kam: Kamailio,
    pub redis: RedisServer,
    pub agent: TestUa,
    pub zendesk: TestUa,
    /// The transfer destination's URI (the Zendesk UA).
    pub zendesk_uri: String,
    /// The carrier: sends to Kamailio only.
    pub caller: TestUa,
    /// Subscriber of both nodes' lifecycle events (answers 200).
    pub capture: Capture,
    pub prefix: String,
    pub dir: PathBuf,
    callers: u32,
}

/// A temp directory of its own for one cluster's configs, stores and logs.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "handoff-full-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl FullCluster {
    /// Starts Redis, the two nodes, then Kamailio in front of them, and waits
    /// until Kamailio answers.
    pub async fn start() -> FullCluster {
        FullCluster::start_with("").await
    }

    /// The same with `extra` config lines on both nodes (a Zendesk API, say).
    pub async fn start_with(extra: &str) -> FullCluster {
        let redis = RedisServer::start();
        let capture = Capture::start().await;
        capture.set_default(Reply::Status(200));
        let agent = TestUa::agent(Transport::Udp).await;
        let zendesk = TestUa::agent(Transport::Udp).await;
        let zendesk_uri = format!("sip:support@{}", zendesk.local_addr());
        let dir = temp_dir();
        let prefix = format!("full{}-{}:", std::process::id(), rand::random::<u32>());
        let mut nodes = Vec::new();
        for id in ["node-a", "node-b"] {
            let addrs = NodeAddrs::pick();
            let keys = format!(
                "{}cluster.node_id = \"{id}\"\n\
                 session.store = \"redis\"\n\
                 session.redis_url = \"{}\"\n\
                 session.key_prefix = \"{prefix}\"\n\
                 session.record_ttl_secs = {RECORD_TTL_SECS}\n\
                 cluster.heartbeat_ms = 200\n\
                 cluster.node_timeout_secs = {NODE_TIMEOUT_SECS}\n\
                 store.path = \"{}\"\n\
                 webhooks = [{{ url = \"{}\", secret = \"{EVENTS_SECRET}\" }}]\n\
                 events.retry_base_ms = 50\nevents.retry_max_ms = 200\n\
                 transfer.destination = [{{ name = \"zendesk\", uri = \"{zendesk_uri}\" }}]\n\
                 http.signing_keys = [{{ kid = \"k1\", secret = \"{SIGNING_SECRET}\", issuer = \"t\" }}]\n\
                 limits.drain_timeout_secs = 30\n\
                 sip.ai_answer_timeout_secs = 30\n\
                 log.level = \"info\"\n{extra}",
                addrs.keys(),
                redis.url(),
                NodeProc::db_path(&dir, id).display(),
                capture.url(),
            );
            let text = config_text(Transport::Udp, agent.local_addr().port(), &keys);
            nodes.push(NodeProc::start(id, &dir, addrs, &text).await);
        }
        let sips: Vec<SocketAddr> = nodes.iter().map(|n| n.addrs.sip).collect();
        let mut kam = Kamailio::start(&sips, PING_SECS);
        let mut caller = TestUa::carrier(Transport::Udp, kam.addr).await;
        wait_up(&mut kam, &mut caller).await;
        FullCluster {
            nodes,
            kam,
            redis,
            agent,
            zendesk,
            zendesk_uri,
            caller,
            capture,
            prefix,
            dir,
            callers: 0,
        }
    }

    pub fn edge(&self) -> SocketAddr {
        self.kam.addr
    }

    /// Which node (index in `nodes`) has the SIP address `at`.
    pub fn node_at(&self, at: SocketAddr) -> usize {
        self.nodes
            .iter()
            .position(|n| n.addrs.sip == at)
            .unwrap_or_else(|| panic!("{at} is not a node"))
    }

    /// A call through the edge from a caller number no other call of this
    /// cluster uses (so a webhook names exactly this call); returns it and
    /// which node took it.
    pub async fn call(&mut self) -> (EdgeCall, usize) {
        self.callers += 1;
        let phone = format!("+1415555{:04}", self.callers);
        let opts = InviteOpts::default().from(&format!(
            "\"Caller {}\" <sip:{phone}@carrier.example>",
            self.callers
        ));
        let edge = self.edge();
        let c = call_with(&mut self.caller, &mut self.agent, edge, &opts).await;
        assert_eq!(c.caller_phone, phone);
        self.agent.clear_backlog();
        let n = self.node_at(c.node);
        (c, n)
    }

    /// The caller hangs up through the edge; the owning node ends the AI leg.
    pub async fn hang_up(&mut self, c: &mut EdgeCall) {
        let edge = self.edge();
        hang_up(&mut self.caller, &mut self.agent, edge, c).await;
        self.agent.clear_backlog();
        self.caller.clear_backlog();
    }

    /// Calls through the edge until one lands on node `want` (at most
    /// `tries`); every other call is hung up. Returns the call left up.
    pub async fn call_on(&mut self, want: usize, tries: usize) -> EdgeCall {
        for _ in 0..tries {
            let (mut c, n) = self.call().await;
            if n == want {
                return c;
            }
            self.hang_up(&mut c).await;
        }
        panic!("{tries} calls and none on {}", self.nodes[want].id);
    }

    /// A call through the edge that the AI agent leaves ringing (180, never
    /// answered): its session id and the node that holds it.
    pub async fn ringing_call(&mut self) -> (String, usize) {
        self.callers += 1;
        let opts = InviteOpts::default().from(&format!(
            "\"Caller {n}\" <sip:+1415555{n:04}@carrier.example>",
            n = self.callers
        ));
        let invite = self.caller.invite(&opts);
        self.caller.send(&invite).await;
        let ai = self.agent.expect_request(Method::Invite, EDGE_WAIT).await;
        let sid = ai
            .msg
            .header("X-OPENCX-SESSION-ID")
            .expect("the AI leg carries the session id")
            .to_owned();
        self.agent.respond(&ai, 180, &[], None).await;
        self.caller
            .expect_response_to(Method::Invite, 180, EDGE_WAIT)
            .await;
        self.agent.clear_backlog();
        self.caller.clear_backlog();
        (sid, self.node_at(ai.from))
    }

    /// Lifecycle events of `kind` the capture server took (2xx) for `session_id`.
    pub fn events_of(&self, kind: &str, session_id: &str) -> Vec<Captured> {
        self.capture
            .delivered()
            .into_iter()
            .filter(|c| c.json()["type"] == kind && c.json()["session_id"] == session_id)
            .collect()
    }

    /// The AI agent REFERs the call to Zendesk on the node that owns it: 202,
    /// the NOTIFY "100 Trying" answered; returns the transfer INVITE at the
    /// Zendesk UA (checked to come from the owning node) and the REFER.
    pub async fn refer_to_zendesk(&mut self, c: &mut EdgeCall) -> (Received, Message) {
        let mut req = self.agent.in_dialog(&mut c.agent_dlg, Method::Refer, None);
        req.push_checked("Refer-To", &format!("<{}>", self.zendesk_uri))
            .expect("header");
        self.agent.send(&req).await;
        self.agent
            .expect_response_to(Method::Refer, 202, EDGE_WAIT)
            .await;
        let n = self.agent.expect_request(Method::Notify, EDGE_WAIT).await;
        assert_eq!(n.msg.call_id(), Some(c.agent_dlg.call_id.as_str()));
        assert_eq!(
            String::from_utf8_lossy(n.msg.body()),
            "SIP/2.0 100 Trying\r\n"
        );
        self.agent.respond(&n, 200, &[], None).await;
        let inv = self.zendesk.expect_request(Method::Invite, EDGE_WAIT).await;
        assert_eq!(inv.from, c.node, "the transfer INVITE comes from the owner");
        assert_eq!(
            inv.msg.header("X-OPENCX-SESSION-ID"),
            Some(c.session_id.as_str()),
            "the transfer INVITE is this call's"
        );
        (inv, req)
    }

    /// Zendesk declines the transfer (486); the AI agent gets the final
    /// NOTIFY and keeps the caller.
    pub async fn decline_transfer(&mut self, c: &EdgeCall, inv: &Received) {
        self.zendesk.respond(inv, 486, &[], None).await;
        self.zendesk.expect_request(Method::Ack, EDGE_WAIT).await;
        let n = self.agent.expect_request(Method::Notify, EDGE_WAIT).await;
        assert_eq!(n.msg.call_id(), Some(c.agent_dlg.call_id.as_str()));
        assert_eq!(
            String::from_utf8_lossy(n.msg.body()),
            "SIP/2.0 486 Busy Here\r\n"
        );
        self.agent.respond(&n, 200, &[], None).await;
        self.zendesk.clear_backlog();
    }

    /// A plain connection to the cluster's Redis.
    pub async fn raw_redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis")
    }

    /// How many live calls of node `id` Redis holds (the cluster's mirror).
    pub async fn mirrored(&self, id: &str) -> usize {
        redis::cmd("HLEN")
            .arg(format!("{}live:{id}", self.prefix))
            .query_async(&mut self.raw_redis().await)
            .await
            .expect("HLEN")
    }

    /// Waits (at most 10 s) until Redis holds `want` live calls of node `id`.
    pub async fn wait_mirrored(&self, id: &str, want: usize) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = self.mirrored(id).await;
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "{id}: {got} live calls in Redis, not {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most 10 s) until enrichment put a contact on the session's
    /// Redis record; its contact id.
    pub async fn wait_contact(&self, session_id: &str) -> String {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got: Option<String> = redis::cmd("HGET")
                .arg(self.session_key(session_id))
                .arg("contact_id")
                .query_async(&mut self.raw_redis().await)
                .await
                .expect("HGET");
            if let Some(id) = got {
                return id;
            }
            assert!(
                std::time::Instant::now() < until,
                "no contact enriched on {session_id}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The session record's key in Redis.
    pub fn session_key(&self, session_id: &str) -> String {
        format!("{}session:{session_id}", self.prefix)
    }

    /// The owning node written in the session's Redis record, if it exists.
    pub async fn owner_in_redis(&self, session_id: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(self.session_key(session_id))
            .arg("node")
            .query_async(&mut self.raw_redis().await)
            .await
            .expect("HGET")
    }
}

impl Drop for FullCluster {
    fn drop(&mut self) {
        // Kept after a failure: the nodes' stderr and stores are there.
        if std::thread::panicking() {
            eprintln!("cluster files kept in {}", self.dir.display());
            eprintln!("kamailio log:\n{}", self.kam.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
