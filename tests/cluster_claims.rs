//! Calls that die with their node get exactly one end across the cluster (issue
//! 13, item 5). Two handoff processes (the real binary) share one Redis; node A
//! holds three calls (two answered, one ringing) and is SIGKILLed:
//! - left dead, node B finds it silent past `cluster.node_timeout_secs`, claims
//!   its calls through Redis and ends each once (`node_lost`); A, restarted on
//!   its store afterwards, sends nothing more;
//! - restarted before it is found dead, A ends its own calls (`node_restarted`)
//!   and B, past the timeout, sends nothing;
//! - stopped (SIGSTOP) past the timeout while its calls are up, A is taken for
//!   dead and B ends its calls; when A runs again it learns it, and when those
//!   calls then hang up their second end is not sent;
//! - left dead with outbound calls up (placed by an AI agent through a carrier),
//!   node B ends them as outbound.
//!
//! Needs `redis-server` (`scripts/install-test-deps.sh`).

mod common;

use common::capture::{Capture, Reply};
use common::cli::{metric, spawn_run, wait_metric, Running};
use common::cluster::fresh_prefix;
use common::crash::{
    answered_call, assert_outbound_end, assert_signed, delivered_of, ends, live_rows,
    outbound_call, outbound_tables, outbound_uas, ringing_call, temp_dir, wait_ends,
};
use common::redis::RedisServer;
use common::{bounded, config_text, Dialog, TestUa, Transport, WAIT};
use handoff::sip::message::Method;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECRET: &str = "cluster-claims-secret-0123456789";
const LIMIT: Duration = Duration::from_secs(90);
const SOON: Duration = Duration::from_secs(15);
/// `cluster.node_timeout_secs` in these tests (heartbeats every 200 ms).
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// One node's config file: the capture server as subscriber, its own store
/// file, Redis sessions under `prefix`, fast heartbeats; `tables` (none: the
/// default route) after the keys.
fn node_config(
    dir: &Path,
    name: &str,
    agent_port: u16,
    capture: &Capture,
    redis: &RedisServer,
    prefix: &str,
    tables: &str,
) -> PathBuf {
    let keys = format!(
        "store.path = \"{db}\"\n\
         webhooks = [{{ url = \"{sub}\", secret = \"{SECRET}\" }}]\n\
         events.retry_base_ms = 50\nevents.retry_max_ms = 200\n\
         sip.ai_answer_timeout_secs = 60\n\
         session.store = \"redis\"\n\
         session.redis_url = \"{url}\"\n\
         session.key_prefix = \"{prefix}\"\n\
         cluster.node_id = \"{name}\"\n\
         cluster.heartbeat_ms = 200\n\
         cluster.node_timeout_secs = {timeout}\n{tables}",
        db = db(dir, name).display(),
        sub = capture.url(),
        url = redis.url(),
        timeout = NODE_TIMEOUT.as_secs(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config_text(Transport::Udp, agent_port, &keys)).unwrap();
    path
}

fn db(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.db"))
}

/// How many live calls of `node` Redis holds.
async fn mirrored(redis: &RedisServer, prefix: &str, node: &str) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HLEN")
        .arg(format!("{prefix}live:{node}"))
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn wait_mirrored(redis: &RedisServer, prefix: &str, node: &str, want: usize) {
    let until = std::time::Instant::now() + SOON;
    loop {
        let got = mirrored(redis, prefix, node).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "{node}: {got} live calls in Redis, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Rig {
    dir: PathBuf,
    capture: Capture,
    redis: RedisServer,
    prefix: String,
    agent: TestUa,
    a_config: PathBuf,
    b_config: PathBuf,
}

impl Rig {
    async fn new(tag: &str) -> Rig {
        Rig::on(tag, RedisServer::start()).await
    }

    async fn on(tag: &str, redis: RedisServer) -> Rig {
        Rig::with_tables(tag, redis, "").await
    }

    /// Both nodes configured with `tables` (e.g. `outbound_tables`).
    async fn with_tables(tag: &str, redis: RedisServer, tables: &str) -> Rig {
        let dir = temp_dir(tag);
        let capture = Capture::start().await;
        capture.set_default(Reply::Status(200));
        let prefix = fresh_prefix();
        let agent = TestUa::agent(Transport::Udp).await;
        let port = agent.local_addr().port();
        let a_config = node_config(&dir, "node-a", port, &capture, &redis, &prefix, tables);
        let b_config = node_config(&dir, "node-b", port, &capture, &redis, &prefix, tables);
        Rig {
            dir,
            capture,
            redis,
            prefix,
            agent,
            a_config,
            b_config,
        }
    }

    async fn start(&self, config: &Path, run: &str) -> (Running, SocketAddr, SocketAddr) {
        let (r, udp, http) =
            spawn_run(config.to_owned(), self.dir.join(format!("{run}.err"))).await;
        wait_metric(http, "handoff_cluster_joined", 1).await;
        (r, udp, http)
    }

    /// Two answered calls and one ringing on the node at `udp`, their started
    /// and answered events delivered and all three in Redis; their session ids
    /// (answered first), the caller and the answered dialogs.
    async fn three_calls(&mut self, udp: SocketAddr) -> ([String; 3], TestUa, Vec<Dialog>) {
        let mut caller = TestUa::carrier(Transport::Udp, udp).await;
        let (a1, d1) = answered_call(&mut caller, &mut self.agent).await;
        let (a2, d2) = answered_call(&mut caller, &mut self.agent).await;
        let ringing = ringing_call(&mut caller, &mut self.agent).await;
        self.capture
            .wait_for("started and answered events", SOON, |s| {
                let n = |t: &str| {
                    s.iter()
                        .filter(|c| c.delivered() && c.json()["type"] == t)
                        .count()
                };
                n("phone_call.started") == 3 && n("phone_call.answered") == 2
            })
            .await;
        wait_mirrored(&self.redis, &self.prefix, "node-a", 3).await;
        ([a1, a2, ringing], caller, vec![d1, d2])
    }

    async fn wait_ends(&self, n: usize) {
        wait_ends(&self.capture, n).await;
    }

    /// Exactly one end per call, by the system, for `reason`; nothing else ended.
    fn assert_one_end_each(&self, calls: &[String; 3], reason: &str) {
        assert_eq!(ends(&self.capture).len(), 3, "exactly three ends");
        for sid in &calls[..2] {
            let got = delivered_of(&self.capture, "phone_call.ended", sid);
            assert_eq!(got.len(), 1, "{sid}: one phone_call.ended");
            assert!(delivered_of(&self.capture, "phone_call.failed", sid).is_empty());
            let d = got[0].json()["data"].clone();
            assert_eq!(d["call_ended_by"], "system");
            assert_eq!(d["custom_data"]["call_status"], reason);
            assert_signed(&got[0], SECRET);
        }
        let got = delivered_of(&self.capture, "phone_call.failed", &calls[2]);
        assert_eq!(got.len(), 1, "the ringing call: one phone_call.failed");
        assert!(delivered_of(&self.capture, "phone_call.ended", &calls[2]).is_empty());
        let d = got[0].json()["data"].clone();
        assert_eq!(d["call_ended_by"], "system");
        assert_eq!(d["failure_reason"], reason);
        assert_signed(&got[0], SECRET);
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sigkill(mut r: Running) {
    r.0.kill().expect("SIGKILL");
    r.0.wait().expect("reaped");
}

fn signal(r: &Running, sig: libc::c_int) {
    // SAFETY: a plain signal to a child this test started.
    assert_eq!(unsafe { libc::kill(r.0.id() as libc::pid_t, sig) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_a_node_left_dead_are_ended_once_by_another_node() {
    bounded(LIMIT, async {
        let mut rig = Rig::new("claims-dead").await;
        let (a, a_udp, _) = rig.start(&rig.a_config.clone(), "a1").await;
        let (_b, _, b_http) = rig.start(&rig.b_config.clone(), "b1").await;
        let (calls, _caller, _) = rig.three_calls(a_udp).await;
        sigkill(a);
        assert!(
            ends(&rig.capture).is_empty(),
            "no end before anyone notices"
        );

        // B notices A's silence, claims its three calls and ends them.
        rig.wait_ends(3).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        rig.assert_one_end_each(&calls, "node_lost");
        wait_metric(b_http, "handoff_cluster_calls_claimed_total", 3).await;
        assert_eq!(mirrored(&rig.redis, &rig.prefix, "node-a").await, 0);
        assert_eq!(
            live_rows(&db(&rig.dir, "node-a")).len(),
            3,
            "A's own store still holds them"
        );

        // A comes back on its store: Redis says B ended them; nothing more is sent.
        let (_a, _, a_http) = rig.start(&rig.a_config.clone(), "a2").await;
        assert!(live_rows(&db(&rig.dir, "node-a")).is_empty());
        wait_metric(a_http, "handoff_events_outbox_depth", 0).await;
        tokio::time::sleep(NODE_TIMEOUT).await;
        assert_eq!(ends(&rig.capture).len(), 3, "no second end");
        assert_eq!(
            metric(a_http, "handoff_calls_recovered_total").await,
            Some(0)
        );
        assert_eq!(
            metric(b_http, "handoff_cluster_calls_claimed_total").await,
            Some(3)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_before_it_is_found_dead_ends_its_own_calls_and_no_other_node_does() {
    bounded(LIMIT, async {
        let mut rig = Rig::new("claims-back").await;
        let (a, a_udp, _) = rig.start(&rig.a_config.clone(), "a1").await;
        let (_b, _, b_http) = rig.start(&rig.b_config.clone(), "b1").await;
        let (calls, _caller, _) = rig.three_calls(a_udp).await;
        sigkill(a);
        let (_a, _, a_http) = rig.start(&rig.a_config.clone(), "a2").await;
        rig.wait_ends(3).await;
        // Past the timeout B would have claimed anything left.
        tokio::time::sleep(NODE_TIMEOUT + Duration::from_secs(1)).await;
        rig.assert_one_end_each(&calls, "node_restarted");
        wait_metric(a_http, "handoff_calls_recovered_total", 3).await;
        assert_eq!(
            metric(b_http, "handoff_cluster_calls_claimed_total").await,
            Some(0)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_taken_for_dead_while_alive_does_not_send_a_second_end() {
    bounded(LIMIT, async {
        let mut rig = Rig::new("claims-fenced").await;
        let (a, a_udp, a_http) = rig.start(&rig.a_config.clone(), "a1").await;
        let (_b, _, b_http) = rig.start(&rig.b_config.clone(), "b1").await;
        let (calls, mut caller, dialogs) = rig.three_calls(a_udp).await;
        signal(&a, libc::SIGSTOP);
        rig.wait_ends(3).await;
        wait_metric(b_http, "handoff_cluster_calls_claimed_total", 3).await;
        signal(&a, libc::SIGCONT);
        wait_metric(a_http, "handoff_cluster_fenced_total", 1).await;
        wait_metric(a_http, "handoff_cluster_joined", 1).await;

        // The answered calls now hang up on A: their ends were sent by B.
        for mut dlg in dialogs {
            caller.send(&caller.bye(&mut dlg)).await;
            caller.expect_response_to(Method::Bye, 200, WAIT).await;
            let bye = rig.agent.expect_request(Method::Bye, WAIT).await;
            rig.agent.respond(&bye, 200, &[], None).await;
        }
        wait_metric(a_http, "handoff_calls_active", 1).await;
        wait_metric(a_http, "handoff_events_outbox_depth", 0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        rig.assert_one_end_each(&calls, "node_lost");
        // A is alive again: B claims nothing more.
        tokio::time::sleep(NODE_TIMEOUT).await;
        assert_eq!(
            metric(b_http, "handoff_cluster_calls_claimed_total").await,
            Some(3)
        );
        drop(a);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_while_redis_is_down_ends_its_calls_once_redis_is_back() {
    bounded(LIMIT, async {
        let mut rig = Rig::new("claims-redis-down").await;
        let (a, a_udp, _) = rig.start(&rig.a_config.clone(), "a1").await;
        let (calls, _caller, _) = rig.three_calls(a_udp).await;
        sigkill(a);
        rig.redis.pause();
        let (_a, a_udp, a_http) = spawn_run(rig.a_config.clone(), rig.dir.join("a2.err")).await;
        // Which calls another node ended is not known yet: none is ended.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(metric(a_http, "handoff_cluster_joined").await, Some(0));
        assert!(ends(&rig.capture).is_empty(), "no end while Redis is away");
        assert_eq!(live_rows(&db(&rig.dir, "node-a")).len(), 3);
        // New calls are served meanwhile.
        let mut caller = TestUa::carrier(Transport::Udp, a_udp).await;
        let (fresh, _) = answered_call(&mut caller, &mut rig.agent).await;
        rig.redis.resume();
        wait_metric(a_http, "handoff_cluster_joined", 1).await;
        rig.wait_ends(3).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        rig.assert_one_end_each(&calls, "node_restarted");
        wait_metric(a_http, "handoff_calls_recovered_total", 3).await;
        let left: Vec<String> = live_rows(&db(&rig.dir, "node-a"))
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(left, vec![fresh], "the call taken meanwhile is still live");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_longer_than_the_node_timeout_takes_no_live_node_for_dead() {
    bounded(LIMIT, async {
        // A Redis that comes back with what it had: every heartbeat in it is then
        // older than the timeout, the live nodes' included.
        let mut rig = Rig::on("claims-outage", RedisServer::start_persistent()).await;
        let (_a, a_udp, a_http) = rig.start(&rig.a_config.clone(), "a1").await;
        let (_b, _, b_http) = rig.start(&rig.b_config.clone(), "b1").await;
        let (_calls, _caller, _) = rig.three_calls(a_udp).await;
        rig.redis.stop();
        tokio::time::sleep(NODE_TIMEOUT + Duration::from_secs(1)).await;
        rig.redis.restart();
        // Past a timeout and a half both nodes have beaten again; neither claimed.
        tokio::time::sleep(NODE_TIMEOUT * 2).await;
        assert!(
            ends(&rig.capture).is_empty(),
            "no call of a live node is ended"
        );
        assert_eq!(
            metric(b_http, "handoff_cluster_calls_claimed_total").await,
            Some(0)
        );
        assert_eq!(
            metric(a_http, "handoff_cluster_fenced_total").await,
            Some(0)
        );
        assert_eq!(mirrored(&rig.redis, &rig.prefix, "node-a").await, 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_calls_of_a_node_left_dead_are_ended_as_outbound_by_another_node() {
    bounded(LIMIT, async {
        let (mut agent, mut carrier) = outbound_uas().await;
        let tables = outbound_tables(carrier.local_addr());
        let rig = Rig::with_tables("claims-outbound", RedisServer::start(), &tables).await;
        let (a, a_udp, _) = rig.start(&rig.a_config.clone(), "a1").await;
        let (_b, _, b_http) = rig.start(&rig.b_config.clone(), "b1").await;
        agent.set_peer(a_udp);
        let answered = outbound_call(&mut agent, &mut carrier, &rig.capture, &[], true).await;
        let known = [answered.clone()];
        let ringing = outbound_call(&mut agent, &mut carrier, &rig.capture, &known, false).await;
        rig.capture
            .wait_for("the outbound answer", SOON, |s| {
                s.iter()
                    .any(|c| c.delivered() && c.json()["type"] == "phone_call.answered")
            })
            .await;
        wait_mirrored(&rig.redis, &rig.prefix, "node-a", 2).await;
        sigkill(a);

        // B claims A's two calls from Redis and ends them, as outbound.
        rig.wait_ends(2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ends(&rig.capture).len(), 2, "exactly two ends");
        assert_outbound_end(&rig.capture, &answered, true, "node_lost");
        assert_outbound_end(&rig.capture, &ringing, false, "node_lost");
        for c in ends(&rig.capture) {
            assert_signed(&c, SECRET);
        }
        wait_metric(b_http, "handoff_cluster_calls_claimed_total", 2).await;
        assert_eq!(mirrored(&rig.redis, &rig.prefix, "node-a").await, 0);
    })
    .await;
}
