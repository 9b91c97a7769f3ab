//! Two handoff nodes (node ids "node-a" and "node-b") on one `redis-server`
//! with the same key prefix (issue 13, "How it is shown"): a webhook on the node
//! that does not hold the call stamps it, and the owning node's transfer INVITE
//! carries that ticket; two webhooks racing on the two nodes, exactly one wins;
//! a stopped node's session expires from Redis after `record_ttl_secs`, and a
//! draining node's call is still stamped through the other node until it ends.
//!
//! redis-server runs as a process on a random loopback port, stopped by PID
//! (tests/common/redis.rs); the nodes and the UAs are in-process and called
//! directly (tests/cluster_kamailio.rs covers Kamailio in front of the nodes).
//! Needs `redis-server`: `scripts/install-test-deps.sh`.

mod common;

use common::cluster::{fire_webhook, fresh_prefix, redis_node};
use common::redis::RedisServer;
use common::scenarios::bye_from_caller;
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{expect_notify, expect_target_invite, refer};
use common::{bounded, CALLER_E164};
use handoff::session::SessionId;
use std::time::{Duration, Instant};

/// Record TTL of the nodes in these tests (the smallest the config accepts).
const TTL_SECS: u64 = 3;

async fn raw_redis(r: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(r.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// The call lands on node A; the prefetch webhook goes to node B, which holds no
/// call; the AI agent REFERs on node A: A's transfer INVITE carries B's stamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_on_the_other_node_stamps_the_call_and_the_transfer_carries_it() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(30), async {
        let prefix = fresh_prefix();
        let mut a = redis_node(&r.url(), &prefix, "node-a", TTL_SECS).await;
        let b = redis_node(&r.url(), &prefix, "node-b", TTL_SECS).await;
        let mut m = establish_media(&mut a.rig).await;
        assert_eq!(a.rig.server.active_calls(), 1);
        assert_eq!(b.rig.server.active_calls(), 0, "node B holds no call");

        let (status, v) = fire_webhook(&b.rig, 5151).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["success"], true, "stamped through node B: {v}");
        assert_eq!(v["session_id"], m.call.session_id.as_str(), "A's call");

        // Node A sees B's stamp in the shared record.
        let sid = SessionId::parse(&m.call.session_id).expect("session id");
        let on_a = a
            .rig
            .server
            .session_store()
            .get(&sid)
            .await
            .expect("store answers")
            .expect("session on A");
        assert_eq!(on_a.zendesk_ticket_id, Some(5151));

        let target = format!("<{}>", a.target);
        let refer_msg = refer(&mut a, &mut m, &target, 202).await;
        expect_notify(&mut a, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut a).await;
        assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), Some("5151"));
        assert_eq!(
            inv.msg.header("X-OPENCX-SESSION-ID"),
            Some(m.call.session_id.as_str())
        );
        a.zendesk.respond(&inv, 486, &[], None).await;
        let _ = expect_notify(&mut a, &m, &refer_msg).await;
        bye_from_caller(&mut a.rig, &mut m.call).await;
    })
    .await;
}

/// Two webhooks for the same caller with different tickets, fired at the same
/// moment at node A and node B: exactly one stamps, the other is told the call
/// already carries the winner's ticket, and the transfer carries the winner's.
/// Repeated over several calls so both orders get a chance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_webhooks_on_two_nodes_exactly_one_wins() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(30), async {
        let prefix = fresh_prefix();
        let mut a = redis_node(&r.url(), &prefix, "node-a", TTL_SECS).await;
        let b = redis_node(&r.url(), &prefix, "node-b", TTL_SECS).await;
        for round in 0..5u64 {
            let mut m = establish_media(&mut a.rig).await;
            let (ta, tb) = (7000 + round, 8000 + round);
            let go = tokio::sync::Barrier::new(2);
            let ((sa, va), (sb, vb)) = tokio::join!(
                async {
                    go.wait().await;
                    fire_webhook(&a.rig, ta).await
                },
                async {
                    go.wait().await;
                    fire_webhook(&b.rig, tb).await
                }
            );
            assert_eq!((sa, sb), (200, 200), "round {round}: {va} {vb}");
            let won: Vec<u64> = [(ta, &va), (tb, &vb)]
                .iter()
                .filter(|(_, v)| v["success"] == true)
                .map(|(t, _)| *t)
                .collect();
            assert_eq!(won.len(), 1, "round {round}: exactly one stamp: {va} {vb}");
            let winner = won[0];
            let loser = if winner == ta { &vb } else { &va };
            assert_eq!(loser["success"], false, "{loser}");
            assert_eq!(loser["ticket_id"], winner, "loser told the winner's ticket");
            assert_eq!(loser["session_id"], m.call.session_id.as_str());

            let target = format!("<{}>", a.target);
            let refer_msg = refer(&mut a, &mut m, &target, 202).await;
            expect_notify(&mut a, &m, &refer_msg).await;
            let inv = expect_target_invite(&mut a).await;
            assert_eq!(
                inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"),
                Some(winner.to_string().as_str()),
                "round {round}"
            );
            a.zendesk.respond(&inv, 486, &[], None).await;
            let _ = expect_notify(&mut a, &m, &refer_msg).await;
            bye_from_caller(&mut a.rig, &mut m.call).await;
            // The ended call leaves the phone index before the next round's call.
            let until = Instant::now() + Duration::from_secs(3);
            while !b
                .rig
                .server
                .session_store()
                .live_by_phone(CALLER_E164)
                .await
                .expect("store answers")
                .is_empty()
            {
                assert!(Instant::now() < until, "round {round}: call not ended");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await;
}

/// Node A, holding a live call, stops without ending it (dropped, as in a crash:
/// nothing refreshes its records any more). While A lived, its record outlived
/// the TTL (A refreshes it); once A is gone the record expires from Redis within
/// `record_ttl_secs`, as node B's store and Redis itself both show, and a
/// webhook at B finds no live session for the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_session_expires_from_redis_within_the_ttl() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(30), async {
        let prefix = fresh_prefix();
        let mut a = redis_node(&r.url(), &prefix, "node-a", TTL_SECS).await;
        let b = redis_node(&r.url(), &prefix, "node-b", TTL_SECS).await;
        let m = establish_media(&mut a.rig).await;
        let sid = SessionId::parse(&m.call.session_id).expect("session id");
        let key = format!("{prefix}session:{}", m.call.session_id);
        let mut raw = raw_redis(&r).await;
        let owner: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("node")
            .query_async(&mut raw)
            .await
            .expect("HGET");
        assert_eq!(owner.as_deref(), Some("node-a"));

        // Alive for longer than the TTL: A keeps refreshing its record.
        tokio::time::sleep(Duration::from_secs(TTL_SECS) + Duration::from_millis(1500)).await;
        let seen = b
            .rig
            .server
            .session_store()
            .get(&sid)
            .await
            .expect("B's store");
        assert!(seen.is_some(), "a live node's session stays past the TTL");
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .expect("PTTL");
        assert!(
            ttl_ms > 0 && ttl_ms <= (TTL_SECS * 1000) as i64,
            "record TTL {ttl_ms} ms"
        );

        // Node A stops without ending its call.
        let stopped = Instant::now();
        drop(m);
        drop(a);
        let limit = Duration::from_secs(TTL_SECS) + Duration::from_millis(1500);
        loop {
            let on_b = b
                .rig
                .server
                .session_store()
                .get(&sid)
                .await
                .expect("B's store");
            if on_b.is_none() {
                break;
            }
            assert!(
                stopped.elapsed() < limit,
                "A's session still in Redis {:?} after A stopped",
                stopped.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .expect("EXISTS");
        assert_eq!(exists, 0, "record gone from Redis");
        assert!(b
            .rig
            .server
            .session_store()
            .live_by_phone(CALLER_E164)
            .await
            .expect("B's store")
            .is_empty());
        let (status, v) = fire_webhook(&b.rig, 9090).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["success"], false, "no live session left to stamp: {v}");
    })
    .await;
}

/// Node A drains (the SIGTERM path) with a call up: the live call can still be
/// stamped through node B while A drains; when the caller hangs up and A's drain
/// finishes, node B sees the session ended, out of the phone index, and a
/// webhook at B finds no live session for the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_nodes_call_is_stamped_via_the_other_node_then_ends() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(30), async {
        let prefix = fresh_prefix();
        let mut a = redis_node(&r.url(), &prefix, "node-a", TTL_SECS).await;
        let b = redis_node(&r.url(), &prefix, "node-b", TTL_SECS).await;
        let mut m = establish_media(&mut a.rig).await;
        let sid = SessionId::parse(&m.call.session_id).expect("session id");
        a.rig.server.start_draining();
        let (status, v) = fire_webhook(&b.rig, 6262).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["success"], true, "a draining node's live call: {v}");
        bye_from_caller(&mut a.rig, &mut m.call).await;
        a.rig.server.drain().await;
        assert_eq!(a.rig.server.active_calls(), 0);
        let ended = b
            .rig
            .server
            .session_store()
            .get(&sid)
            .await
            .expect("B's store")
            .expect("the ended session lingers");
        assert!(ended.ended_at.is_some(), "ended in Redis");
        assert_eq!(ended.zendesk_ticket_id, Some(6262));
        assert!(b
            .rig
            .server
            .session_store()
            .live_by_phone(CALLER_E164)
            .await
            .expect("B's store")
            .is_empty());
        let (status, v) = fire_webhook(&b.rig, 6263).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["success"], false, "no live session left: {v}");
    })
    .await;
}

/// Benchmark, not a test: a webhook on node B until node A reads the ticket from
/// the shared record (B's answer comes after the stamp script ran in Redis; A's
/// read is the one its REFER path makes), over 200 calls held by A. Prints p50/p99.
/// `cargo test --release --test cluster_redis -- --ignored --nocapture webhook_to_stamp_latency`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn webhook_to_stamp_latency() {
    let r = RedisServer::start();
    let prefix = fresh_prefix();
    let mut a = redis_node(&r.url(), &prefix, "node-a", 60).await;
    let b = redis_node(&r.url(), &prefix, "node-b", 60).await;
    let (mut answered, mut seen) = (Vec::new(), Vec::new());
    for i in 0..200u64 {
        let mut m = establish_media(&mut a.rig).await;
        let sid = SessionId::parse(&m.call.session_id).expect("session id");
        let ticket = 10_000 + i;
        let t0 = Instant::now();
        let (status, v) = fire_webhook(&b.rig, ticket).await;
        answered.push(t0.elapsed());
        assert_eq!(
            (status, &v["success"]),
            (200, &serde_json::json!(true)),
            "{v}"
        );
        loop {
            let s = a.rig.server.session_store().get(&sid).await;
            if s.ok().flatten().and_then(|s| s.zendesk_ticket_id) == Some(ticket) {
                break;
            }
        }
        seen.push(t0.elapsed());
        bye_from_caller(&mut a.rig, &mut m.call).await;
    }
    for (what, mut took) in [
        ("webhook answered by B", answered),
        ("stamp read on A", seen),
    ] {
        took.sort();
        let p = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
        println!(
            "{what}: p50 {:?} p99 {:?} (n = {})",
            p(0.5),
            p(0.99),
            took.len()
        );
    }
}
