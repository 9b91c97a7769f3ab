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

use common::bounded;
use common::full_cluster::FullCluster;
use std::time::Duration;

/// The bound of one scenario, cluster start and stop included.
const LIMIT: Duration = Duration::from_secs(60);

/// Calls placed at Kamailio spread over both nodes by the Call-ID hash: each
/// node's `/metrics` counts exactly the calls its AI legs showed, and each
/// call's shared record in Redis names the node that took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_kamailio_spread_over_both_node_processes() {
    let mut cl = FullCluster::start().await;
    bounded(LIMIT, async {
        let mut taken = [0i64; 2];
        for _ in 0..16 {
            let (mut c, n) = cl.call().await;
            taken[n] += 1;
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
    })
    .await;
}
