//! Calls that die with their node get an end: handoff (the real binary) is
//! SIGKILLed with calls up (two answered, one ringing) and restarted on the same
//! store; the subscriber then gets exactly one `phone_call.ended` for each
//! answered call and one `phone_call.failed` for the ringing one, by the
//! `system`, signed. A clean stop and restart after that sends nothing more.
//! Outbound calls (placed by an AI agent through a carrier) cut the same way
//! get ends that still say outbound.

mod common;

use common::capture::{Capture, Reply};
use common::cli::{metric, spawn_run, wait_metric};
use common::crash::{
    answered_call, assert_outbound_end, assert_signed, delivered_of, ends, live_rows,
    outbound_call, outbound_tables, outbound_uas, ringing_call, stop_cleanly, temp_dir, wait_ends,
    whole_call,
};
use common::{bounded, config_text, TestUa, Transport};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "crash-recovery-secret-0123456789";
const LIMIT: Duration = Duration::from_secs(60);
const SOON: Duration = Duration::from_secs(10);

/// Config keys: the capture server as the one subscriber, a store file, and an
/// AI answer timeout long enough that the ringing call still rings at the kill.
fn keys(capture: &Capture, db: &Path) -> String {
    format!(
        "store.path = \"{}\"\n\
         webhooks = [{{ url = \"{}\", secret = \"{SECRET}\" }}]\n\
         events.retry_base_ms = 50\nevents.retry_max_ms = 200\n\
         sip.ai_answer_timeout_secs = 30\n",
        db.display(),
        capture.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_live_at_a_sigkill_each_get_one_end_by_the_system_after_the_restart() {
    bounded(LIMIT, async {
        let dir = temp_dir("crash");
        let db = dir.join("handoff.db");
        let capture = Capture::start().await;
        capture.set_default(Reply::Status(200));
        let mut agent = TestUa::agent(Transport::Udp).await;
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            config_text(
                Transport::Udp,
                agent.local_addr().port(),
                &keys(&capture, &db),
            ),
        )
        .unwrap();

        // First run: two answered calls and one ringing, none ended.
        let (mut first, udp, _http) = spawn_run(config.clone(), dir.join("first.err")).await;
        let mut caller = TestUa::carrier(Transport::Udp, udp).await;
        let (a1, _) = answered_call(&mut caller, &mut agent).await;
        let (a2, _) = answered_call(&mut caller, &mut agent).await;
        let ringing = ringing_call(&mut caller, &mut agent).await;
        // Their started and answered events are delivered: committed with the
        // live records.
        capture
            .wait_for("started and answered events", SOON, |s| {
                let n = |t: &str| {
                    s.iter()
                        .filter(|c| c.delivered() && c.json()["type"] == t)
                        .count()
                };
                n("phone_call.started") == 3 && n("phone_call.answered") == 2
            })
            .await;
        first.0.kill().expect("SIGKILL");
        first.0.wait().expect("reaped");
        assert!(ends(&capture).is_empty(), "no end before the restart");
        let mut live = live_rows(&db);
        live.sort();
        let mut want = vec![a1.clone(), a2.clone(), ringing.clone()];
        want.sort();
        assert_eq!(
            live.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
            want,
            "the three calls are recorded live"
        );
        for (sid, answered) in &live {
            assert_eq!(
                answered.is_some(),
                *sid != ringing,
                "{sid}: answered as recorded"
            );
        }

        // Second run on the same store: each call gets its end, once.
        let (second, udp, http) = spawn_run(config.clone(), dir.join("second.err")).await;
        wait_ends(&capture, 3).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ends(&capture).len(), 3, "exactly three ends, no duplicate");
        for sid in [&a1, &a2] {
            let got = delivered_of(&capture, "phone_call.ended", sid);
            assert_eq!(got.len(), 1, "{sid}: one phone_call.ended");
            assert!(delivered_of(&capture, "phone_call.failed", sid).is_empty());
            let v = got[0].json();
            assert_eq!(v["org_id"], "org-test");
            let d = &v["data"];
            assert_eq!(d["call_ended_by"], "system");
            assert_eq!(d["custom_data"]["call_status"], "node_restarted");
            assert_eq!(d["from"], "+14155551212");
            assert!(d["answered_at"].is_string(), "{d}");
            assert_signed(&got[0], SECRET);
        }
        let got = delivered_of(&capture, "phone_call.failed", &ringing);
        assert_eq!(got.len(), 1, "the ringing call: one phone_call.failed");
        assert!(delivered_of(&capture, "phone_call.ended", &ringing).is_empty());
        let d = got[0].json()["data"].clone();
        assert_eq!(d["call_ended_by"], "system");
        assert_eq!(d["failure_category"], "failed");
        assert_eq!(d["failure_reason"], "node_restarted");
        assert_eq!(d["sip_status"], Value::Null);
        assert_signed(&got[0], SECRET);
        wait_metric(http, "handoff_calls_recovered_total", 3).await;
        assert!(live_rows(&db).is_empty(), "no live record left");

        // A call that ends normally in the second run, then a clean stop and a
        // third start: nothing more is sent.
        let mut caller = TestUa::carrier(Transport::Udp, udp).await;
        let whole = whole_call(&mut caller, &mut agent).await;
        capture
            .wait_for("the whole call's end", SOON, |s| {
                s.iter().any(|c| {
                    c.delivered()
                        && c.json()["type"] == "phone_call.ended"
                        && c.json()["session_id"] == whole.as_str()
                })
            })
            .await;
        assert_eq!(
            delivered_of(&capture, "phone_call.ended", &whole)[0].json()["data"]["call_ended_by"],
            "user"
        );
        stop_cleanly(second);
        let before = capture.delivered().len();
        assert!(
            live_rows(&db).is_empty(),
            "a call that ended leaves no record"
        );
        let (_third, _udp, http) = spawn_run(config, dir.join("third.err")).await;
        wait_metric(http, "handoff_events_outbox_depth", 0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            capture.delivered().len(),
            before,
            "a clean restart sends nothing"
        );
        assert_eq!(metric(http, "handoff_calls_recovered_total").await, Some(0));
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_live_at_a_sigkill_end_outbound_after_the_restart() {
    bounded(LIMIT, async {
        let dir = temp_dir("crash-outbound");
        let db = dir.join("handoff.db");
        let capture = Capture::start().await;
        capture.set_default(Reply::Status(200));
        let (mut agent, mut carrier) = outbound_uas().await;
        let config = dir.join("config.toml");
        let extra = format!(
            "{}{}",
            keys(&capture, &db),
            outbound_tables(carrier.local_addr())
        );
        let port = agent.local_addr().port();
        std::fs::write(&config, config_text(Transport::Udp, port, &extra)).unwrap();

        // First run: the AI agent places two calls; the callee answers one and
        // the other still rings at the kill.
        let (mut first, udp, _http) = spawn_run(config.clone(), dir.join("first.err")).await;
        agent.set_peer(udp);
        let answered = outbound_call(&mut agent, &mut carrier, &capture, &[], true).await;
        let known = [answered.clone()];
        let ringing = outbound_call(&mut agent, &mut carrier, &capture, &known, false).await;
        capture
            .wait_for("the outbound answer", SOON, |s| {
                s.iter()
                    .any(|c| c.delivered() && c.json()["type"] == "phone_call.answered")
            })
            .await;
        first.0.kill().expect("SIGKILL");
        first.0.wait().expect("reaped");
        assert!(ends(&capture).is_empty(), "no end before the restart");
        let mut want = vec![answered.clone(), ringing.clone()];
        want.sort();
        let live: Vec<String> = live_rows(&db).into_iter().map(|(s, _)| s).collect();
        assert_eq!(live, want, "both outbound calls are recorded live");

        // Second run on the same store: each gets one end, outbound.
        let (_second, _udp, http) = spawn_run(config, dir.join("second.err")).await;
        wait_ends(&capture, 2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ends(&capture).len(), 2, "exactly two ends, no duplicate");
        assert_outbound_end(&capture, &answered, true, "node_restarted");
        assert_outbound_end(&capture, &ringing, false, "node_restarted");
        for c in ends(&capture) {
            assert_signed(&c, SECRET);
        }
        wait_metric(http, "handoff_calls_recovered_total", 2).await;
        assert!(live_rows(&db).is_empty(), "no live record left");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
