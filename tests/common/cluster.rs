//! Several in-process handoff nodes sharing one Redis session store (issue 13):
//! each node is a [`TransferRig`] (its own AI agent, "Zendesk" UA and carrier UA)
//! started with `store = "redis"`, its own `[cluster] node_id`, and the same
//! `key_prefix`, so a webhook on one node stamps a call held by another.

use crate::common::scenarios::transfer::{post_webhook, TransferRig, SIGNING_SECRET};
use crate::common::{config_text, Rig, TestUa, Transport, CALLER_E164};
use handoff::server::Server;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A key prefix no other cluster in this test run uses.
pub fn fresh_prefix() -> String {
    format!(
        "c{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One handoff node named `node_id` on Redis `url` under `prefix`, its session
/// records expiring `record_ttl_secs` after the node last refreshed them;
/// transfers go to the node's own "Zendesk" UA.
pub async fn redis_node(
    url: &str,
    prefix: &str,
    node_id: &str,
    record_ttl_secs: u64,
) -> TransferRig {
    redis_node_with(url, prefix, node_id, record_ttl_secs, "").await
}

/// [`redis_node`] with `extra` config lines (dotted keys) added, e.g. a fake
/// Zendesk's (`FakeZendesk::config`) or a `store.path`.
pub async fn redis_node_with(
    url: &str,
    prefix: &str,
    node_id: &str,
    record_ttl_secs: u64,
    extra: &str,
) -> TransferRig {
    let t = Transport::Udp;
    let zendesk = TestUa::agent(t).await;
    let target = format!("sip:support@127.0.0.1:{}", zendesk.local_addr().port());
    let extra = format!(
        "transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]\n\
         http.signing_keys = [{{ kid = \"k1\", secret = \"{SIGNING_SECRET}\", issuer = \"t\" }}]\n\
         session.store = \"redis\"\n\
         session.redis_url = \"{url}\"\n\
         session.key_prefix = \"{prefix}\"\n\
         session.record_ttl_secs = {record_ttl_secs}\n\
         cluster.node_id = \"{node_id}\"\n\
         {extra}"
    );
    let agent = TestUa::agent(t).await;
    let text = config_text(t, agent.local_addr().port(), &extra);
    let settings = handoff::config::Config::parse(&text, "test")
        .unwrap_or_else(|e| panic!("cluster node config refused: {e}\n{text}"));
    let server = Server::start(settings).await.expect("handoff node starts");
    assert_eq!(server.node_id(), node_id);
    TransferRig::around(server, agent, zendesk, target, t).await
}

/// The prefetch webhook body stamping `ticket` on the default caller's call.
pub fn webhook_body(ticket: u64) -> String {
    format!(r#"{{"ticket_id": {ticket}, "caller_phone": "{CALLER_E164}", "requester_phone": ""}}"#)
}

/// Fires the signed prefetch webhook for `ticket` at `node`; returns the HTTP
/// status and the JSON answer.
pub async fn fire_webhook(node: &Rig, ticket: u64) -> (u16, serde_json::Value) {
    let resp = post_webhook(node, webhook_body(ticket)).await;
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.expect("webhook answers JSON");
    (status, v)
}
