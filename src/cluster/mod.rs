//! Several nodes on one Redis: each node's liveness, and an end for every call
//! of a node that died (issue 13, item 5).
//!
//! Every node with the Redis session store runs one task ([`task`]) that
//! - **joins** at start: Redis returns the calls of this node that another node
//!   already ended (while this one was down) and drops its old live set; the
//!   events writer then ends the rest of the calls the last run left live
//!   (`node_restarted`), so each gets one end across the cluster. Until Redis
//!   answers, that recovery waits (the node serves calls meanwhile);
//! - **beats** every `cluster.heartbeat_ms`: its score in the `nodes` set, with
//!   the changes of its live-call set ([`mirror`]) written in the same script
//!   (a change is also written within 50 ms of being committed locally);
//! - **claims** the calls of every node silent longer than
//!   `cluster.node_timeout_secs`: one script moves them to this node, so however
//!   many nodes try, one gets each call; this node then ends each
//!   (`node_lost`) in its own outbox and removes it from its claim.
//!
//! A node that was taken for dead while it was alive (cut off from Redis longer
//! than the timeout) learns it at its next beat, joins again, and does not send
//! the end of the calls another node ended.
//!
//! What is not exact: a call that starts and dies with its node within one
//! write (at most 50 ms) is not in Redis, so if the node never comes back that
//! call gets no end; a call that ended on a node that dies before the end is
//! written to Redis gets a second end (`node_lost`) from the claimer. Both
//! windows are the mirror's write delay. The local store has every call, so a
//! node that restarts on its store ends all of them exactly once.

pub mod mirror;
pub mod scripts;
pub mod task;
pub mod wire;

pub use task::{spawn, Cluster};
