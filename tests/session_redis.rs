//! The Redis session store against a real `redis-server` on a random loopback port:
//! the shared conformance checks (also run on the in-memory table), two nodes
//! racing a stamp, expiry of a dead node's sessions, an outage and its recovery,
//! and a transfer carrying a ticket stamped through Redis.

mod common;

use common::redis::RedisServer;
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{
    expect_notify, expect_target_invite, post_webhook, refer, stamp_via_webhook, TransferRig,
    SIGNING_SECRET,
};
use common::scenarios::{bye_from_caller, count};
use common::store_conformance::{self, live, PHONE};
use common::{bounded, config_text, TestUa, Transport, CALLER_E164};
use handoff::config::session::RedisSettings;
use handoff::metrics::Metrics;
use handoff::server::Server;
use handoff::session::{RedisStore, SessionStore, SessionTable, StampOutcome, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A prefix no other store in this run uses.
fn fresh_prefix() -> String {
    format!(
        "t{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn node(
    r: &RedisServer,
    prefix: &str,
    name: &str,
    ttl: Duration,
) -> (Arc<RedisStore>, Arc<Metrics>) {
    let settings = RedisSettings {
        url: r.url(),
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_millis(200),
        record_ttl: ttl,
    };
    let metrics = Arc::new(Metrics::default());
    let store = RedisStore::new(
        &settings,
        name,
        1000,
        Duration::from_secs(60),
        metrics.clone(),
    )
    .expect("store");
    (Arc::new(store), metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_checks() {
    bounded(Duration::from_secs(30), async {
        let fresh = || -> Arc<dyn SessionStore> {
            Arc::new(SessionTable::new(100, Duration::from_secs(60)))
        };
        store_conformance::run_all(&fresh).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_checks() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(60), async {
        let fresh = || -> Arc<dyn SessionStore> {
            node(&r, &fresh_prefix(), "n1", Duration::from_secs(60)).0
        };
        store_conformance::run_all(&fresh).await;
    })
    .await;
}

/// Two nodes (two stores on one Redis) stamp different tickets on one call at the
/// same moment, many times: exactly one stamp wins each time, the other conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_a_stamp_exactly_one_wins() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(60), async {
        for round in 0..100 {
            let prefix = fresh_prefix();
            let (a, _) = node(&r, &prefix, "node-a", Duration::from_secs(60));
            let (b, _) = node(&r, &prefix, "node-b", Duration::from_secs(60));
            a.create(live("call", "org-1")).await.unwrap();
            let go = Arc::new(tokio::sync::Barrier::new(2));
            let race = |s: Arc<RedisStore>, t: u64| {
                let go = go.clone();
                tokio::spawn(async move {
                    go.wait().await;
                    s.stamp_ticket("org-1", PHONE, t).await.unwrap()
                })
            };
            let (x, y) = (race(a.clone(), 1000 + round), race(b.clone(), 2000 + round));
            let outcomes = [x.await.unwrap(), y.await.unwrap()];
            let won: Vec<_> = outcomes
                .iter()
                .filter(|o| matches!(o, StampOutcome::Stamped(_)))
                .collect();
            assert_eq!(won.len(), 1, "round {round}: {outcomes:?}");
            let stored = b
                .get(&store_conformance::id("call"))
                .await
                .unwrap()
                .unwrap();
            let winner = if matches!(outcomes[0], StampOutcome::Stamped(_)) {
                1000 + round
            } else {
                2000 + round
            };
            assert_eq!(stored.zendesk_ticket_id, Some(winner));
            assert!(outcomes.iter().any(|o| *o
                == StampOutcome::Conflict {
                    session: store_conformance::id("call"),
                    existing: winner
                }));
        }
    })
    .await;
}

/// A live session lives as long as its node refreshes it; when the node stops
/// (dies), its sessions expire from Redis after the record TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_sessions_expire_and_a_live_nodes_stay() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(30), async {
        let prefix = fresh_prefix();
        let ttl = Duration::from_secs(3);
        let (alive, _) = node(&r, &prefix, "alive", ttl);
        let (dead, _) = node(&r, &prefix, "dead", ttl);
        let (observer, _) = node(&r, &prefix, "observer", ttl);
        alive.create(live("kept", "org-1")).await.unwrap();
        dead.create(live("lost", "org-1")).await.unwrap();
        drop(dead); // never refreshes again
        let until = Instant::now() + ttl + Duration::from_millis(1500);
        while Instant::now() < until {
            alive.sweep().await.unwrap(); // what the server's sweeper does every second
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let id = store_conformance::id;
        assert!(
            observer.get(&id("lost")).await.unwrap().is_none(),
            "dead node's session expired"
        );
        assert!(
            observer.get(&id("kept")).await.unwrap().is_some(),
            "refreshed session stays"
        );
        let by_phone = observer.live_by_phone(PHONE).await.unwrap();
        assert_eq!(by_phone.len(), 1);
        assert_eq!(
            observer.stamp_ticket("org-1", PHONE, 5).await.unwrap(),
            StampOutcome::Stamped(id("kept"))
        );
    })
    .await;
}

/// Redis killed: every operation fails as Unavailable within the timeout, the
/// gauge says 0, new calls keep a local session; Redis back on the same port:
/// everything works again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable_quickly_and_recovers_by_itself() {
    let mut r = RedisServer::start();
    bounded(Duration::from_secs(60), async {
        let prefix = fresh_prefix();
        let (s, metrics) = node(&r, &prefix, "n1", Duration::from_secs(60));
        s.create(live("before", "org-1")).await.unwrap();
        assert_eq!(metrics.session_store_up.load(Ordering::Relaxed), 1);
        r.stop();
        let t = Instant::now();
        for _ in 0..3 {
            match s.stamp_ticket("org-1", PHONE, 1).await {
                Err(StoreError::Unavailable(_)) => {}
                other => panic!("expected Unavailable, got {other:?}"),
            }
            assert!(matches!(
                s.get(&store_conformance::id("before")).await,
                Err(StoreError::Unavailable(_))
            ));
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "bounded: {:?}",
            t.elapsed()
        );
        assert_eq!(metrics.session_store_up.load(Ordering::Relaxed), 0);
        assert!(metrics.session_store_errors_total.load(Ordering::Relaxed) >= 6);
        // A call starting now still gets a session, kept on this node only.
        s.create(live("during", "org-1")).await.unwrap();
        let local = s.get(&store_conformance::id("during")).await.unwrap();
        assert!(
            local.is_some(),
            "degraded: the call reads its local session"
        );
        r.restart();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let _ = s.sweep().await; // probes while down
            if s.is_up() {
                break;
            }
            assert!(Instant::now() < deadline, "did not recover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(metrics.session_store_up.load(Ordering::Relaxed), 1);
        s.create(live("after", "org-1")).await.unwrap();
        assert_eq!(
            s.stamp_ticket("org-1", PHONE, 77).await.unwrap(),
            StampOutcome::Stamped(store_conformance::id("after"))
        );
        // The session kept locally during the outage was written back: another node
        // finds and stamps it.
        let (other, _) = node(&r, &prefix, "n2", Duration::from_secs(60));
        let during = other.get(&store_conformance::id("during")).await.unwrap();
        assert!(during.is_some(), "written to Redis when it came back");
        assert_eq!(
            other.stamp_ticket("org-1", PHONE, 78).await.unwrap(),
            StampOutcome::Stamped(store_conformance::id("during"))
        );
        assert_eq!(
            s.get(&store_conformance::id("during"))
                .await
                .unwrap()
                .and_then(|x| x.zendesk_ticket_id),
            Some(78),
            "the owning node now reads Redis, not its old local copy"
        );
    })
    .await;
}

/// A Redis that hangs (frozen, connections open) costs each operation at most
/// `timeout_ms` (200 ms here), then Unavailable; thawed, it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_costs_at_most_the_timeout_per_operation() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(30), async {
        let (s, metrics) = node(&r, &fresh_prefix(), "n1", Duration::from_secs(60));
        s.create(live("a", "org-1")).await.unwrap();
        r.pause();
        for _ in 0..3 {
            let t = Instant::now();
            let got = s.get(&store_conformance::id("a")).await;
            let took = t.elapsed();
            assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
            assert!(
                took >= Duration::from_millis(150) && took < Duration::from_millis(1000),
                "bounded by timeout_ms: {took:?}"
            );
        }
        assert_eq!(metrics.session_store_up.load(Ordering::Relaxed), 0);
        r.resume();
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.get(&store_conformance::id("a")).await.is_err() {
            assert!(Instant::now() < deadline, "did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(metrics.session_store_up.load(Ordering::Relaxed), 1);
    })
    .await;
}

/// handoff with `store = "redis"` on `url` under `prefix`, routing transfers to a
/// third UA.
async fn redis_rig(url: &str, prefix: &str) -> TransferRig {
    let t = Transport::Udp;
    let zendesk = TestUa::agent(t).await;
    let target = format!("sip:support@127.0.0.1:{}", zendesk.local_addr().port());
    let extra = format!(
        "transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]\n\
         http.signing_keys = [{{ kid = \"k1\", secret = \"{SIGNING_SECRET}\", issuer = \"t\" }}]\n\
         session.store = \"redis\"\n\
         session.redis_url = \"{url}\"\n\
         session.key_prefix = \"{prefix}\"\n\
         cluster.node_id = \"node-e2e\"\n"
    );
    let agent = TestUa::agent(t).await;
    let text = config_text(t, agent.local_addr().port(), &extra);
    let settings = handoff::config::Config::parse(&text, "test").expect("test config");
    let server = Server::start(settings).await.expect("handoff starts");
    TransferRig::around(server, agent, zendesk, target, t).await
}

fn webhook_body(ticket: u64) -> String {
    format!(r#"{{"ticket_id": {ticket}, "caller_phone": "{CALLER_E164}", "requester_phone": ""}}"#)
}

/// End to end: handoff with `store = "redis"`, a call, the webhook stamps through
/// HTTP, REFER: the transfer INVITE carries the ticket read back from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_invite_carries_a_ticket_stamped_through_redis() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(30), async {
        let prefix = fresh_prefix();
        let mut tr = redis_rig(&r.url(), &prefix).await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 4242).await;
        // The record is in Redis.
        let (observer, _) = node(&r, &prefix, "observer", Duration::from_secs(60));
        let sid = handoff::session::SessionId::parse(&m.call.session_id).unwrap();
        let stored = observer.get(&sid).await.unwrap().expect("session in Redis");
        assert_eq!(stored.zendesk_ticket_id, Some(4242));
        // Owned by this node, and expiring unless refreshed.
        let client = redis::Client::open(r.url()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let key = format!("{prefix}session:{}", m.call.session_id);
        let owner: String = redis::cmd("HGET")
            .arg(&key)
            .arg("node")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(owner, "node-e2e");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 120_000, "record TTL {ttl} ms");
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), Some("4242"));
        tr.zendesk.respond(&inv, 486, &[], None).await;
        let _ = expect_notify(&mut tr, &m, &refer_msg).await;
        bye_from_caller(&mut tr.rig, &mut m.call).await;
        // Ended: out of the phone index, lingering for linger_secs (300) at most.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ended: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg("ended")
                .query_async(&mut raw)
                .await
                .unwrap();
            if ended.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "session not marked ended in Redis"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 300_000, "linger TTL {ttl} ms");
        assert!(observer
            .live_by_phone(CALLER_E164)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

/// Degraded mode end to end: Redis down, a call still completes and transfers
/// (without a ticket), the webhook answers 503 and the gauge says 0; Redis back:
/// the webhook stamps again, with no restart of handoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_calls_still_transfer_webhook_503_then_recovers() {
    let mut r = RedisServer::start();
    bounded(Duration::from_secs(60), async {
        let mut tr = redis_rig(&r.url(), &fresh_prefix()).await;
        r.stop();
        let mut m = establish_media(&mut tr.rig).await;
        let resp = post_webhook(&tr.rig, webhook_body(11)).await;
        assert_eq!(resp.status(), 503, "Zendesk is told to retry");
        assert_eq!(
            tr.rig
                .server
                .metrics()
                .session_store_up
                .load(Ordering::Relaxed),
            0
        );
        assert!(count(&tr.rig.server, |x| &x.session_store_errors_total) >= 1);
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        assert_eq!(
            inv.msg.header("X-OPENCX-SESSION-ID"),
            Some(m.call.session_id.as_str())
        );
        assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), None);
        tr.zendesk.respond(&inv, 486, &[], None).await;
        let _ = expect_notify(&mut tr, &m, &refer_msg).await;
        bye_from_caller(&mut tr.rig, &mut m.call).await;

        r.restart();
        let mut m = establish_media(&mut tr.rig).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let resp = post_webhook(&tr.rig, webhook_body(12)).await;
            if resp.status() == 200 {
                let v: serde_json::Value = resp.json().await.expect("json");
                assert_eq!(v["success"], true, "{v}");
                break;
            }
            assert!(Instant::now() < deadline, "webhook did not recover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            tr.rig
                .server
                .metrics()
                .session_store_up
                .load(Ordering::Relaxed),
            1
        );
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), Some("12"));
        tr.zendesk.respond(&inv, 486, &[], None).await;
        let _ = expect_notify(&mut tr, &m, &refer_msg).await;
        bye_from_caller(&mut tr.rig, &mut m.call).await;
    })
    .await;
}

/// The REFER-path read (`get`) on loopback Redis: p50/p99 over 5,000 reads.
/// `cargo test --release --test session_redis -- --ignored --nocapture get_latency`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn get_latency() {
    let r = RedisServer::start();
    let (s, _) = node(&r, &fresh_prefix(), "bench", Duration::from_secs(60));
    let mut x = live("bench", "org-1");
    x.custom_data.insert("k".into(), "v".into());
    s.create(x).await.unwrap();
    let id = store_conformance::id("bench");
    for _ in 0..500 {
        s.get(&id).await.unwrap();
    }
    let mut took = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let t = Instant::now();
        s.get(&id).await.unwrap().expect("present");
        took.push(t.elapsed());
    }
    took.sort();
    let p = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    println!(
        "redis get: p50 {:?} p99 {:?} max {:?}",
        p(0.50),
        p(0.99),
        took[took.len() - 1]
    );
    let mem = SessionTable::new(10, Duration::from_secs(60));
    mem.insert(live("bench", "org-1")).unwrap();
    let mut took = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let t = Instant::now();
        SessionStore::get(&mem, &id)
            .await
            .unwrap()
            .expect("present");
        took.push(t.elapsed());
    }
    took.sort();
    println!(
        "memory get: p50 {:?} p99 {:?}",
        p2(&took, 0.5),
        p2(&took, 0.99)
    );
}

fn p2(took: &[Duration], q: f64) -> Duration {
    took[((took.len() as f64 * q) as usize).min(took.len() - 1)]
}
