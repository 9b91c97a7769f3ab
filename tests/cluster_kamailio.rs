//! The shipped Kamailio edge (`deploy/kamailio/kamailio.cfg`) in front of two
//! handoff nodes (issue 13, item 4): calls spread over both nodes by the
//! Call-ID hash, in-dialog requests reach the node that owns the dialog through
//! the Record-Route, and a draining node stops getting new calls with no call
//! failing. Kamailio runs as a process on random loopback ports and is stopped
//! by PID; the nodes and the UAs are in-process.
//!
//! Needs `kamailio` (Debian package, 5.6): `scripts/install-test-deps.sh`.

mod common;

use common::kamailio::{agent_hangs_up, call, hang_up, wait_up, Kamailio};
use common::{bounded, start_handoff, TestUa, Transport};
use handoff::server::Server;
use handoff::sip::message::Method;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Seconds between Kamailio's OPTIONS probes in this test.
const PING_SECS: u64 = 1;

fn started(s: &Server) -> u64 {
    s.metrics()
        .calls_started_total
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn refused(s: &Server) -> u64 {
    s.metrics()
        .calls_rejected_overload_total
        .load(std::sync::atomic::Ordering::Relaxed)
}

async fn node(ai_port: u16, id: &str) -> Server {
    start_handoff(
        Transport::Udp,
        ai_port,
        &format!("cluster.node_id = \"{id}\"\nlimits.drain_timeout_secs = 30"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_spreads_calls_routes_in_dialog_to_owner_and_skips_draining_nodes() {
    let mut agent = TestUa::agent(Transport::Udp).await;
    let ai_port = agent.local_addr().port();
    let nodes = [
        node(ai_port, "node-a").await,
        node(ai_port, "node-b").await,
        node(ai_port, "node-c").await,
    ];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.udp_addrs()[0]).collect();
    let owner = |at: SocketAddr| {
        addrs
            .iter()
            .position(|a| *a == at)
            .unwrap_or_else(|| panic!("AI leg from {at}, not a node"))
    };
    let [a, b, c] = &nodes;
    let mut kam = Kamailio::start(&addrs, PING_SECS);
    let edge = kam.addr;
    let mut caller = TestUa::carrier(Transport::Udp, edge).await;
    bounded(Duration::from_secs(90), async {
        wait_up(&mut kam, &mut caller).await;

        // 30 calls: the Call-ID hash gives every node some; every BYE through
        // the edge reaches the node that took the call. One call on a stays up.
        let mut taken = [0u64; 3];
        let mut kept_on_a = None;
        for _ in 0..30 {
            let mut call = call(&mut caller, &mut agent, edge).await;
            let n = owner(call.node);
            taken[n] += 1;
            if n == 0 && kept_on_a.is_none() {
                kept_on_a = Some(call);
                continue;
            }
            hang_up(&mut caller, &mut agent, edge, &mut call).await;
        }
        assert!(taken.iter().all(|t| *t > 0), "calls per node: {taken:?}");
        assert_eq!(
            [started(a), started(b), started(c)],
            taken,
            "each node started exactly the calls its AI legs showed"
        );
        let mut live_on_a = kept_on_a.expect("a took a call");
        assert!(
            common::eventually(Duration::from_secs(3), || {
                nodes.iter().map(Server::active_calls).collect::<Vec<_>>() == [1, 0, 0]
            })
            .await,
            "one call live on a, none elsewhere"
        );

        // a drains with its call up. Once Kamailio's probe has had its 503, a
        // gets no INVITE at all (not even one it refuses) and no call fails.
        a.start_draining();
        tokio::time::sleep(Duration::from_millis(PING_SECS * 2000 + 500)).await;
        let (refused_a, started_a) = (refused(a), started(a));
        for _ in 0..12 {
            let mut call = call(&mut caller, &mut agent, edge).await;
            assert_ne!(owner(call.node), 0, "the draining node took a new call");
            hang_up(&mut caller, &mut agent, edge, &mut call).await;
        }
        assert_eq!(
            (refused(a), started(a)),
            (refused_a, started_a),
            "after its probe got 503, Kamailio sent the draining node no INVITE"
        );

        // c drains now, between two probes: an INVITE hashed to c gets its 503
        // and fails over to b (failure_route, ds_next_dst); the caller sees
        // only the 200. Calls until one has gone that way.
        let started_c = started(c);
        c.start_draining();
        let mut sent = 0;
        while refused(c) == 0 {
            assert!(sent < 30, "30 calls and none hashed to c");
            let mut call = call(&mut caller, &mut agent, edge).await;
            assert_eq!(owner(call.node), 1, "b takes every call now");
            hang_up(&mut caller, &mut agent, edge, &mut call).await;
            sent += 1;
        }
        assert_eq!(started(c), started_c, "no new call started on c");

        // The draining node's live call went on; the AI agent ends it and the
        // node's BYE reaches the caller through the edge (its Record-Route).
        assert_eq!(a.active_calls(), 1, "the draining node's call is still up");
        agent_hangs_up(&mut caller, &mut agent, edge, &mut live_on_a).await;
        assert!(
            common::eventually(Duration::from_secs(3), || a.active_calls() == 0).await,
            "the live call on the draining node ended"
        );
    })
    .await;
    drop(kam);
}

/// A node that died (SIGKILL) but is still in the dispatcher set, not yet
/// probed: an INVITE hashed to it gets no reply within FR_TIMER and goes to the
/// next node; the caller gets its call. Probes are far apart here so that
/// only the timeout can take the dead node out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_fails_an_invite_over_when_a_dead_node_does_not_answer() {
    let mut agent = TestUa::agent(Transport::Udp).await;
    let live = node(agent.local_addr().port(), "node-live").await;
    // The dead node: a socket that reads and never answers.
    let mut dead = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let live_addr = live.udp_addrs()[0];
    let mut kam = Kamailio::start(&[dead.local_addr(), live_addr], 600);
    let edge = kam.addr;
    let mut caller = TestUa::carrier(Transport::Udp, edge).await;
    bounded(Duration::from_secs(60), async {
        wait_up(&mut kam, &mut caller).await;
        let mut calls = 0;
        let mut failed_over = false;
        while !failed_over {
            assert!(calls < 20, "20 calls and none hashed to the dead node");
            let before = Instant::now();
            let mut c = call(&mut caller, &mut agent, edge).await;
            assert_eq!(c.node, live_addr, "every call ends up on the live node");
            hang_up(&mut caller, &mut agent, edge, &mut c).await;
            calls += 1;
            // Did this one go to the dead node first?
            let mut tried = false;
            while let Some(r) = dead.recv(Duration::from_millis(10)).await {
                tried |= r.msg.method() == Some(&Method::Invite);
            }
            if tried {
                assert!(
                    before.elapsed() >= Duration::from_millis(900),
                    "failover came before FR_TIMER"
                );
                failed_over = true;
            }
        }
        // Marked inactive by the timeout: the next calls go straight to the live node.
        for _ in 0..6 {
            let mut c = call(&mut caller, &mut agent, edge).await;
            hang_up(&mut caller, &mut agent, edge, &mut c).await;
        }
        assert!(
            dead.recv(Duration::from_millis(100)).await.is_none(),
            "an INVITE went to the node marked inactive"
        );
    })
    .await;
    drop(kam);
}
