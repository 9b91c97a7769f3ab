//! A node that drains tells its load balancer so (issue 13, item 3): `/readyz`
//! answers 503 naming the state, an out-of-dialog OPTIONS gets 503 with
//! Retry-After, `handoff_draining` is 1, and the live call goes on to its end.

mod common;

use common::scenarios::{assert_call_gone, bye_from_caller, establish};
use common::{bounded, InviteOpts, Rig, Transport, CALLER_E164, WAIT};
use handoff::sip::message::Method;
use serde_json::Value;
use std::time::Duration;

const OPTIONS: &str = "OPTIONS sip:handoff@{handoff} SIP/2.0
Via: {via}
Max-Forwards: 70
From: <sip:probe@edge.example>;tag={tag}
To: <sip:handoff@{handoff}>
Call-ID: {call_id}
CSeq: 1 OPTIONS

";

async fn readyz(rig: &Rig) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{}/readyz", rig.server.http_addr()))
        .await
        .expect("GET /readyz");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("/readyz answers JSON"))
}

async fn draining_gauge(rig: &Rig) -> String {
    let text = reqwest::get(format!("http://{}/metrics", rig.server.http_addr()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .find(|l| l.starts_with("handoff_draining "))
        .unwrap_or_else(|| panic!("no handoff_draining in /metrics:\n{text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_node_answers_503_to_probes_and_readyz_while_live_call_finishes() {
    bounded(Duration::from_secs(20), async {
        let mut rig = Rig::new(
            Transport::Udp,
            "cluster.node_id = \"node-a\"\nlimits.drain_timeout_secs = 10\nlimits.retry_after_secs = 7",
        )
        .await;
        assert_eq!(rig.server.node_id(), "node-a");
        let (status, v) = readyz(&rig).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["state"], "ready");
        assert_eq!(draining_gauge(&rig).await, "handoff_draining 0");
        rig.caller.send_raw(OPTIONS).await;
        rig.caller
            .expect_response_to(Method::Options, 200, WAIT)
            .await;

        let mut call = establish(&mut rig, InviteOpts::default()).await;
        rig.server.start_draining();

        // The load balancer's probe: 503 with Retry-After, so it stops sending calls.
        let mut probe = rig.another_caller().await;
        probe.send_raw(OPTIONS).await;
        let refused = probe
            .expect_response_to(Method::Options, 503, WAIT)
            .await;
        assert_eq!(
            refused.msg.header("Retry-After"),
            Some("7"),
            "503 to OPTIONS while draining carries limits.retry_after_secs"
        );
        let (status, v) = readyz(&rig).await;
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["ready"], false);
        assert_eq!(v["state"], "draining");
        assert_eq!(draining_gauge(&rig).await, "handoff_draining 1");

        // The live call is not touched: its BYE goes through as usual.
        assert_eq!(rig.server.active_calls(), 1);
        bye_from_caller(&mut rig, &mut call).await;
        assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
        // Still draining after the last call: no way back to ready.
        let (status, v) = readyz(&rig).await;
        assert_eq!((status, &v["state"]), (503, &Value::from("draining")));
    })
    .await;
}
