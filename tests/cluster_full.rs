//! The whole cluster as processes (issue 13, "How it is shown"): `redis-server`,
//! Kamailio with the shipped `deploy/kamailio/kamailio.cfg`, and two handoff
//! nodes, each the real binary with its own config, `cluster.node_id` and
//! SQLite store, on one Redis under one key prefix (tests/common/full_cluster.rs).
//! The caller only ever sends to Kamailio's address. Each test starts a cluster
//! of its own on random loopback addresses and ports; every process is stopped
//! by its PID, also when a test fails.
//!
//! Needs `redis-server` and `kamailio`: `scripts/install-test-deps.sh`.

mod common;

use common::full_cluster::{FullCluster, PING_SECS, RECORD_TTL_SECS};
use common::zendesk::FakeZendesk;
use common::{bounded, TestUa};
use handoff::sip::message::Method;
use std::time::Duration;

/// The bound of one scenario, cluster start and stop included.
const LIMIT: Duration = Duration::from_secs(60);

/// Calls placed at Kamailio spread over both nodes by the Call-ID hash: each
/// node's `/metrics` counts exactly the calls its AI legs showed, each call's
/// shared record in Redis names the node that took it, and the subscriber of
/// both nodes gets each call's start and end once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_kamailio_spread_over_both_node_processes() {
    bounded(LIMIT, async {
        let mut cl = FullCluster::start().await;
        let mut taken = [0i64; 2];
        let mut sessions = Vec::new();
        for _ in 0..16 {
            let (mut c, n) = cl.call().await;
            taken[n] += 1;
            sessions.push(c.session_id.clone());
            assert_eq!(
                cl.owner_in_redis(&c.session_id).await.as_deref(),
                Some(cl.nodes[n].id.as_str()),
                "the shared record names the node that took the call"
            );
            cl.hang_up(&mut c).await;
        }
        assert!(taken.iter().all(|t| *t > 0), "calls per node: {taken:?}");
        let on_nodes = [cl.nodes[0].started().await, cl.nodes[1].started().await];
        assert_eq!(
            on_nodes, taken,
            "each node started exactly the calls its AI legs showed"
        );
        cl.capture
            .wait_for("16 ended events", Duration::from_secs(10), |seen| {
                seen.iter()
                    .filter(|c| c.delivered() && c.json()["type"] == "phone_call.ended")
                    .count()
                    >= 16
            })
            .await;
        for sid in &sessions {
            for kind in ["phone_call.started", "phone_call.ended"] {
                assert_eq!(cl.events_of(kind, sid).len(), 1, "{sid}: one {kind}");
            }
        }
    })
    .await;
}

/// For a call on each node: the prefetch webhook fired at the node that does
/// NOT hold the call stamps it through Redis; the AI agent's REFER on the
/// owning node sends the transfer INVITE, from the owner, with that ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_on_the_other_node_stamps_the_call_and_the_owners_transfer_carries_it() {
    bounded(LIMIT, async {
        // One Zendesk account behind both nodes: the node that takes the webhook
        // confirms the ticket and enriches its requester (user 7) into a contact
        // in Redis.
        let z = FakeZendesk::start().await;
        z.user(7, serde_json::json!({}));
        let mut cl = FullCluster::start_with(&z.config()).await;
        let mut contact_ids = Vec::new();
        for (owner, ticket) in [(0usize, 4401u64), (1, 4402)] {
            let mut c = cl.call_on(owner, 30).await;
            let phone = c.caller_phone.clone();
            z.ticket_from(ticket, 7, None, &phone);
            let other = &cl.nodes[1 - owner];
            let (status, v) = other.fire_webhook(ticket, &phone).await;
            assert_eq!(status, 200, "{}: {v}", other.id);
            assert_eq!(v["success"], true, "stamped through {}: {v}", other.id);
            assert_eq!(v["session_id"], c.session_id.as_str(), "the owner's call");

            let enriched = cl.wait_contact(&c.session_id).await;
            let (inv, _refer) = cl.refer_to_zendesk(&mut c).await;
            assert_eq!(
                inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"),
                Some(ticket.to_string().as_str()),
                "{}'s transfer carries the stamp made on {}",
                cl.nodes[owner].id,
                cl.nodes[1 - owner].id
            );
            // The contact the other node enriched, from Redis.
            let contact = inv
                .msg
                .header("X-OPENCX-CONTACT-ID")
                .unwrap_or_else(|| panic!("{}: no contact on the transfer", cl.nodes[owner].id))
                .to_owned();
            assert_eq!(contact, enriched);
            contact_ids.push(contact);
            cl.decline_transfer(&c, &inv).await;
            cl.hang_up(&mut c).await;
        }
        // Enriched once on B (for A's call) and once on A (for B's): one user, one id.
        assert_eq!(
            contact_ids[0], contact_ids[1],
            "one ct- id whichever node enriched"
        );
        assert!(contact_ids[0].starts_with("ct-"), "{}", contact_ids[0]);
    })
    .await;
}

/// Two webhooks for the same call with different tickets, fired at the same
/// moment at node A and node B: exactly one stamps, the other is told the
/// winner's ticket, and the owner's transfer carries the winner's. Repeated so
/// that both orders and both owners get a chance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webhooks_raced_on_the_two_nodes_exactly_one_stamp_wins() {
    bounded(LIMIT, async {
        let mut cl = FullCluster::start().await;
        let mut winners = [0; 2];
        for round in 0..6u64 {
            let (mut c, _) = cl.call().await;
            let phone = c.caller_phone.clone();
            let (ta, tb) = (7000 + round, 8000 + round);
            let go = tokio::sync::Barrier::new(2);
            let (a, b) = (&cl.nodes[0], &cl.nodes[1]);
            let ((sa, va), (sb, vb)) = tokio::join!(
                async {
                    go.wait().await;
                    a.fire_webhook(ta, &phone).await
                },
                async {
                    go.wait().await;
                    b.fire_webhook(tb, &phone).await
                }
            );
            assert_eq!((sa, sb), (200, 200), "round {round}: {va} {vb}");
            let won: Vec<(usize, u64)> = [(0, ta, &va), (1, tb, &vb)]
                .iter()
                .filter(|(_, _, v)| v["success"] == true)
                .map(|(n, t, _)| (*n, *t))
                .collect();
            assert_eq!(won.len(), 1, "round {round}: exactly one stamp: {va} {vb}");
            let (at, winner) = won[0];
            winners[at] += 1;
            let loser = if at == 0 { &vb } else { &va };
            assert_eq!(loser["success"], false, "{loser}");
            assert_eq!(loser["ticket_id"], winner, "loser told the winner's ticket");
            assert_eq!(loser["session_id"], c.session_id.as_str());

            let (inv, _refer) = cl.refer_to_zendesk(&mut c).await;
            assert_eq!(
                inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"),
                Some(winner.to_string().as_str()),
                "round {round}"
            );
            cl.decline_transfer(&c, &inv).await;
            cl.hang_up(&mut c).await;
        }
        eprintln!("stamps won per node over the rounds: {winners:?}");
    })
    .await;
}

/// `/metrics` sample: OPTIONS answered by the node with `status`.
fn options_answered(status: u16) -> String {
    format!(
        "handoff_sip_responses_total{{direction=\"out\",method=\"OPTIONS\",status=\"{status}\"}}"
    )
}

/// How long Kamailio waits for a probe's answer before it marks the node
/// inactive: the FR_TIMER the cluster runs it with (1 s), and a margin for a
/// loaded machine.
const PROBE_TIMEOUT_AND_MARGIN: Duration = Duration::from_millis(1000 + 2000);

/// SIGTERM node A with a call up: once Kamailio's probe has had A's 503, every
/// new call goes to B and none fails, A starts none, and A's live call goes on
/// to its end, after which A exits 0. A comes back (same config, store and
/// address) and takes calls again. Then SIGKILL node B with a call up: once
/// Kamailio's probe to B's address has gone unanswered, every new call goes to
/// A, none fails and none is even tried on B; B's session record expires
/// from Redis within its TTL, and a webhook for B's caller finds no live call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_and_killed_nodes_get_no_new_calls_and_none_fails() {
    bounded(LIMIT, async {
        let mut cl = FullCluster::start().await;
        // Drain.
        let mut live_a = cl.call_on(0, 30).await;
        let started_a = cl.nodes[0].started().await;
        cl.nodes[0].sigterm();
        cl.nodes[0]
            .wait_metric(&options_answered(503), Duration::from_secs(10), |v| v >= 1)
            .await;
        for _ in 0..10 {
            let (mut c, n) = cl.call().await;
            assert_eq!(n, 1, "a new call went to the draining node");
            cl.hang_up(&mut c).await;
        }
        assert_eq!(
            cl.nodes[0].started().await,
            started_a,
            "no call started on the draining node"
        );
        assert_eq!(cl.nodes[0].metric("handoff_calls_active").await, Some(1));
        cl.hang_up(&mut live_a).await;
        let status = cl.nodes[0].wait_exit(Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "node-a after its drain: {status}\n{}",
            cl.nodes[0].stderr()
        );

        // Back on the same address: Kamailio's probe gets 200 and A takes calls.
        cl.nodes[0].restart().await;
        cl.nodes[0]
            .wait_metric(&options_answered(200), Duration::from_secs(10), |v| v >= 1)
            .await;
        let mut c = cl.call_on(0, 30).await;
        cl.hang_up(&mut c).await;

        // Death.
        let live_b = cl.call_on(1, 30).await;
        assert_eq!(
            cl.owner_in_redis(&live_b.session_id).await.as_deref(),
            Some("node-b")
        );
        let b_sip = cl.nodes[1].addrs.sip;
        cl.nodes[1].sigkill();
        let killed = std::time::Instant::now();
        // Whatever reaches B's address from now on lands here, unanswered.
        let mut ghost = TestUa::udp_bound(b_sip).await;
        ghost
            .expect_request(
                Method::Options,
                // The next probe, and a margin for a loaded machine.
                Duration::from_secs(PING_SECS * 2 + 3),
            )
            .await;
        tokio::time::sleep(PROBE_TIMEOUT_AND_MARGIN).await;
        let started_a = cl.nodes[0].started().await;
        for _ in 0..10 {
            let (mut c, n) = cl.call().await;
            assert_eq!(n, 0, "every new call on the live node");
            cl.hang_up(&mut c).await;
        }
        assert_eq!(cl.nodes[0].started().await, started_a + 10);
        ghost
            .expect_silence(
                "an INVITE to the dead node after Kamailio's probe noticed",
                Duration::from_millis(50),
                |m| m.method() == Some(&Method::Invite),
            )
            .await;

        // B's session record expires from Redis (nothing refreshes it).
        let key = cl.session_key(&live_b.session_id);
        let mut raw = cl.raw_redis().await;
        let limit = Duration::from_secs(RECORD_TTL_SECS + 3);
        loop {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .expect("EXISTS");
            if exists == 0 {
                break;
            }
            assert!(
                killed.elapsed() < limit,
                "the dead node's session still in Redis {:?} after the kill",
                killed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, v) = cl.nodes[0].fire_webhook(9090, &live_b.caller_phone).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["success"], false, "the dead node's call is not live: {v}");
    })
    .await;
}

/// Fires the webhook for `phone` at `node` until it stamps (Redis back, the
/// session written to it); panics after `within`. What it last answered.
async fn stamp_within(
    node: &common::node_proc::NodeProc,
    ticket: u64,
    phone: &str,
    within: Duration,
) -> serde_json::Value {
    let until = std::time::Instant::now() + within;
    loop {
        let (status, v) = node.fire_webhook(ticket, phone).await;
        if status == 200 && v["success"] == true {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "{}: no stamp for {phone} within {within:?}: {status} {v}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis killed (by PID) mid-run: both nodes say so (`handoff_session_store_up`
/// 0), the webhook answers 503 on both, and calls through Kamailio keep
/// completing on both nodes, transfers included (without a ticket). Redis
/// restarted on the same port: the nodes reconnect by themselves, the calls
/// that started during the outage are written to Redis and a webhook on the
/// other node stamps them, and the owner's transfer carries the stamp. A call
/// up from before the outage still ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_calls_complete_webhooks_503_and_stamps_work_again() {
    bounded(LIMIT, async {
        let mut cl = FullCluster::start().await;
        let (mut before, _) = cl.call().await;
        for n in &cl.nodes {
            n.wait_metric("handoff_session_store_up", Duration::from_secs(5), |v| {
                v == 1
            })
            .await;
        }

        cl.redis.stop();
        for n in &cl.nodes {
            n.wait_metric("handoff_session_store_up", Duration::from_secs(10), |v| {
                v == 0
            })
            .await;
            let (status, v) = n.fire_webhook(5500, &before.caller_phone).await;
            assert_eq!(status, 503, "{}: webhook while Redis is down: {v}", n.id);
            n.wait_metric(
                "handoff_session_store_errors_total",
                Duration::from_secs(5),
                |v| v > 0,
            )
            .await;
        }
        // Calls complete on both nodes, and one call up on each stays.
        let mut kept = Vec::new();
        for owner in [0, 1] {
            let mut c = cl.call_on(owner, 30).await;
            let (inv, _refer) = cl.refer_to_zendesk(&mut c).await;
            assert_eq!(
                inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"),
                None,
                "no stamp while Redis is down"
            );
            cl.decline_transfer(&c, &inv).await;
            cl.hang_up(&mut c).await;
            kept.push(cl.call_on(owner, 30).await);
        }
        for (owner, c) in kept.iter().enumerate() {
            let (status, v) = cl.nodes[1 - owner]
                .fire_webhook(5600, &c.caller_phone)
                .await;
            assert_eq!(status, 503, "{v}");
        }

        cl.redis.restart();
        for n in &cl.nodes {
            n.wait_metric("handoff_session_store_up", Duration::from_secs(10), |v| {
                v == 1
            })
            .await;
        }
        for (owner, mut c) in kept.into_iter().enumerate() {
            let ticket = 5700 + owner as u64;
            let other = &cl.nodes[1 - owner];
            let v = stamp_within(other, ticket, &c.caller_phone, Duration::from_secs(10)).await;
            assert_eq!(v["session_id"], c.session_id.as_str(), "{v}");
            assert_eq!(
                cl.owner_in_redis(&c.session_id).await.as_deref(),
                Some(cl.nodes[owner].id.as_str()),
                "the session kept locally is in Redis again, under its owner"
            );
            let (inv, _refer) = cl.refer_to_zendesk(&mut c).await;
            assert_eq!(
                inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"),
                Some(ticket.to_string().as_str()),
                "{}'s transfer after Redis came back",
                cl.nodes[owner].id
            );
            cl.decline_transfer(&c, &inv).await;
            cl.hang_up(&mut c).await;
        }
        cl.hang_up(&mut before).await;
        // A new call after the outage: stamped through the other node at once.
        let (mut c, owner) = cl.call().await;
        let (status, v) = cl.nodes[1 - owner]
            .fire_webhook(5800, &c.caller_phone)
            .await;
        assert_eq!(
            (status, &v["success"]),
            (200, &serde_json::json!(true)),
            "{v}"
        );
        cl.hang_up(&mut c).await;
    })
    .await;
}

/// Each end event a call got: (type, `call_ended_by`, reason), the reason being
/// `custom_data.call_status` of an end and `failure_reason` of a failure.
fn ends_of(c: &FullCluster, session_id: &str) -> Vec<(String, String, String)> {
    ["phone_call.ended", "phone_call.failed"]
        .iter()
        .flat_map(|kind| c.events_of(kind, session_id))
        .map(|e| {
            let v = e.json();
            let d = &v["data"];
            let reason = if v["type"] == "phone_call.failed" {
                d["failure_reason"].as_str()
            } else {
                d["custom_data"]["call_status"].as_str()
            };
            let reason = reason.unwrap_or("").to_owned();
            (
                v["type"].as_str().unwrap_or("").to_owned(),
                d["call_ended_by"].as_str().unwrap_or("").to_owned(),
                reason,
            )
        })
        .collect()
}

/// Waits (at most `within`) until every call in `sids` has an end event.
async fn wait_ends(c: &FullCluster, sids: &[String], within: Duration) {
    c.capture
        .wait_for("an end for each call", within, |_| {
            sids.iter().all(|s| !ends_of(c, s).is_empty())
        })
        .await;
}

/// A node SIGKILLed with calls up: restarted on its store, it ends each of them
/// once (`node_restarted`); left dead, the other node finds it silent past
/// `cluster.node_timeout_secs`, claims its calls through Redis and ends each
/// once (`node_lost`). Either way one end per call, by the system, and nothing
/// more after a further timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_calls_up_gets_one_end_per_call_restarted_or_left_dead() {
    bounded(LIMIT * 2, async {
        let mut c = FullCluster::start().await;
        // Restarted: two answered calls and one ringing on node A.
        let mut on_a = Vec::new();
        for _ in 0..2 {
            on_a.push(c.call_on(0, 20).await.session_id);
        }
        // Ringing calls that land on B stay up there: B's calls too.
        let mut ringing_on_b = Vec::new();
        let ringing = loop {
            let (sid, n) = c.ringing_call().await;
            if n == 0 {
                break sid;
            }
            ringing_on_b.push(sid);
        };
        on_a.push(ringing.clone());
        c.wait_mirrored("node-a", 3).await;
        c.nodes[0].kill_and_restart().await;
        wait_ends(&c, &on_a, Duration::from_secs(15)).await;
        for sid in &on_a {
            let kind = if *sid == ringing {
                "phone_call.failed"
            } else {
                "phone_call.ended"
            };
            assert_eq!(
                ends_of(&c, sid),
                [(kind.into(), "system".into(), "node_restarted".into())],
                "{sid}"
            );
        }

        // Left dead: two answered calls on node B (and the ringing ones), then B
        // is killed for good.
        let mut on_b = Vec::new();
        for _ in 0..2 {
            on_b.push(c.call_on(1, 20).await.session_id);
        }
        c.wait_mirrored("node-b", on_b.len() + ringing_on_b.len())
            .await;
        let claimed_before = c.nodes[0]
            .metric("handoff_cluster_calls_claimed_total")
            .await;
        c.nodes[1].sigkill();
        let all_b: Vec<String> = on_b.iter().chain(&ringing_on_b).cloned().collect();
        wait_ends(&c, &all_b, Duration::from_secs(20)).await;
        for sid in &all_b {
            let kind = if on_b.contains(sid) {
                "phone_call.ended"
            } else {
                "phone_call.failed"
            };
            assert_eq!(
                ends_of(&c, sid),
                [(kind.into(), "system".into(), "node_lost".into())],
                "{sid}"
            );
        }
        assert_eq!(claimed_before, Some(0));
        let want = all_b.len() as i64;
        c.nodes[0]
            .wait_metric(
                "handoff_cluster_calls_claimed_total",
                Duration::from_secs(5),
                |v| v == want,
            )
            .await;
        // Another timeout later: still one end per call, A's included.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for sid in on_a.iter().chain(&all_b) {
            assert_eq!(ends_of(&c, sid).len(), 1, "{sid}");
        }
        assert_eq!(c.mirrored("node-b").await, 0);
    })
    .await;
}
