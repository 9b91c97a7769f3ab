//! Lifecycle events with real SIP calls through handoff: each event once with its
//! fields for every way a call can go, signed as the README documents, in order per
//! session, retried, durable across a SIGKILL, and never in the way of a call.

mod common;

use common::build::ack_for_non_2xx;
use common::capture::{Capture, Captured, Reply};
pub use common::crash::assert_signed;
use common::scenarios::transfer::{answer_target, expect_notify, expect_target_invite, refer};
use common::scenarios::{bye_from_agent, bye_from_caller, establish, place_call};
use common::{bounded, cancel_for, InviteOpts, Rig, TestUa, Transport, CALLED, WAIT};
use handoff::sip::message::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SECRET: &str = "events-test-secret-0123456789";
const LIMIT: Duration = Duration::from_secs(30);
/// How long a test waits for events that must come soon (a loaded machine).
const SOON: Duration = Duration::from_secs(10);

/// Config keys: one subscriber (the capture server), short retry backoffs.
fn keys(capture: &Capture, extra: &str) -> String {
    format!(
        "webhooks = [{{ url = \"{}\", secret = \"{SECRET}\" }}]\n\
         events.retry_base_ms = 50\nevents.retry_max_ms = 200\nevents.request_timeout_ms = 2000\n{extra}",
        capture.url()
    )
}

const ROUTE_WITH_LANGUAGES: &str = "\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"{ai}\"\nlanguages = [\"es\", \"en\"]\nagent_version = \"v7\"\n";

/// Events for one session that the subscriber took (2xx), in arrival order.
fn of_session(seen: &[Captured], sid: &str) -> Vec<Captured> {
    seen.iter()
        .filter(|c| c.delivered() && c.json()["session_id"] == sid)
        .cloned()
        .collect()
}

fn types(events: &[Captured]) -> Vec<String> {
    events
        .iter()
        .map(|c| c.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Wait until `n` events of the session are delivered; then check no more come.
async fn session_events(capture: &Capture, sid: &str, n: usize) -> Vec<Captured> {
    capture
        .wait_for(&format!("{n} events of {sid}"), SOON, |s| {
            of_session(s, sid).len() >= n
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = of_session(&capture.requests(), sid);
    assert_eq!(got.len(), n, "exactly {n} events: {:?}", types(&got));
    got
}

fn data(c: &Captured) -> Value {
    c.json()["data"].clone()
}

fn assert_envelope(c: &Captured, kind: &str, sid: &str) {
    let v = c.json();
    assert_eq!(v["type"], kind);
    assert_eq!(v["session_id"], sid);
    assert_eq!(v["org_id"], "org-test");
    let id = v["id"].as_str().expect("id");
    assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
    let at = v["created_at"].as_str().expect("created_at");
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
}

fn assert_parties(d: &Value) {
    assert_eq!(d["direction"], "inbound");
    assert_eq!(d["from"], "+14155551212");
    assert_eq!(d["caller_name"], "Alice");
    assert_eq!(d["to"], CALLED);
    assert_eq!(d["agent_id"], "agent-test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_ended_by_the_caller_fires_each_event_once_with_its_fields() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        let mut rig = Rig::new(Transport::Udp, &keys(&capture, ROUTE_WITH_LANGUAGES)).await;
        let opts = InviteOpts::default().header("X-Campaign", "spring").header(
            "X-OPENCX-SESSION-CUSTOM-DATA",
            "plan=gold&ref=A%2F17&note=call+back",
        );
        let mut call = establish(&mut rig, opts).await;
        bye_from_caller(&mut rig, &mut call).await;
        let sid = call.session_id.clone();
        let got = session_events(&capture, &sid, 4).await;
        assert_eq!(
            types(&got),
            [
                "phone_call.started",
                "conversation.started",
                "phone_call.answered",
                "phone_call.ended"
            ]
        );
        for (c, kind) in got.iter().zip(types(&got)) {
            assert_envelope(c, &kind, &sid);
            assert_signed(c, SECRET);
        }
        let ids: std::collections::HashSet<Value> =
            got.iter().map(|c| c.json()["id"].clone()).collect();
        assert_eq!(ids.len(), 4, "unique ids");

        let started = data(&got[0]);
        assert_parties(&started);
        assert!(started["started_at"].as_str().is_some());
        assert_eq!(data(&got[1])["channel"], "phone");
        assert_eq!(data(&got[1])["contact_id"], Value::Null);
        assert_parties(&data(&got[2]));
        assert!(data(&got[2])["answered_at"].as_str().is_some());

        let ended = data(&got[3]);
        assert_parties(&ended);
        assert_eq!(ended["call_ended_by"], "user");
        assert_eq!(ended["ai_resolution_status"], "resolved");
        assert_eq!(ended["human_resolution_status"], Value::Null);
        assert_eq!(ended["contact_id"], Value::Null);
        assert_eq!(ended["contact"], Value::Null);
        assert_eq!(ended["language"], json!(["es", "en"]));
        let cd = &ended["custom_data"];
        assert_eq!(cd["Campaign"], "spring", "X- header, prefix stripped");
        assert_eq!(cd["plan"], "gold");
        assert_eq!(cd["ref"], "A/17");
        assert_eq!(cd["note"], "call back");
        assert!(cd["duration_seconds"].as_u64().is_some(), "{cd}");
        assert_eq!(cd["participant_count"], 2);
        assert_eq!(cd["is_outbound"], false);
        assert_eq!(cd["recording_available"], false);
        assert_eq!(cd["agent_version"], "v7");
        assert_eq!(cd["call_status"], "completed");
        assert!(cd.get("OPENCX-SESSION-CUSTOM-DATA").is_none());
        let text = rig.server.metrics().render_prometheus();
        assert!(text.contains("handoff_events_emitted_total{type=\"phone_call.ended\"} 1\n"));
        assert!(text.contains("handoff_events_deliveries_total{outcome=\"delivered\"} 4\n"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_ended_by_the_ai_agent_and_json_custom_data_refused_cleanly() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        let mut rig = Rig::new(Transport::Udp, &keys(&capture, "")).await;
        let opts = InviteOpts::default()
            .header("X-Campaign", "spring")
            .header("X-OPENCX-SESSION-CUSTOM-DATA", "{\"plan\": \"gold\"}");
        let mut call = establish(&mut rig, opts).await;
        bye_from_agent(&mut rig, &mut call).await;
        let got = session_events(&capture, &call.session_id, 4).await;
        let ended = data(&got[3]);
        assert_eq!(ended["call_ended_by"], "agent");
        assert_eq!(ended["language"], Value::Null, "no languages on the route");
        assert_eq!(ended["custom_data"]["agent_version"], Value::Null);
        assert_eq!(ended["custom_data"]["Campaign"], "spring");
        assert!(ended["custom_data"].get("plan").is_none());
        let m = rig.server.metrics();
        assert_eq!(
            m.events
                .custom_data_rejected_total
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    })
    .await;
}

/// The AI agent refuses with `status`; the caller gets its final answer and ACKs.
/// Returns the session id.
async fn refused_call(rig: &mut Rig, opts: &InviteOpts, status: u16) -> String {
    let (invite, ai_invite) = place_call(rig, opts).await;
    let sid = ai_invite
        .msg
        .header("X-OPENCX-SESSION-ID")
        .unwrap()
        .to_owned();
    rig.agent.respond(&ai_invite, status, &[], None).await;
    rig.agent.expect_request(Method::Ack, WAIT).await;
    let resp = final_answer(&mut rig.caller, Duration::from_secs(5)).await;
    rig.caller.send(&ack_for_non_2xx(&invite, &resp)).await;
    sid
}

async fn final_answer(caller: &mut TestUa, within: Duration) -> handoff::sip::message::Message {
    caller
        .expect(
            "a final answer to the INVITE",
            within,
            |m| {
                m.status().is_some_and(|s| s >= 200)
                    && m.cseq().is_some_and(|c| c.method == Method::Invite)
            },
            |m| m.status().is_some_and(|s| s < 200),
        )
        .await
        .msg
}

fn assert_failed(got: &[Captured], category: &str, reason: &str, status: Value) {
    assert_eq!(
        types(got),
        [
            "phone_call.started",
            "conversation.started",
            "phone_call.failed"
        ],
        "no answered, no ended"
    );
    let d = data(&got[2]);
    assert_eq!(d["failure_category"], category, "{d}");
    assert_eq!(d["failure_reason"], reason, "{d}");
    assert_eq!(d["sip_status"], status, "{d}");
    assert_eq!(d["custom_data"]["call_status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_calls_fail_with_each_category() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        // A second route whose AI agent refuses TCP connections.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let routes = format!(
            "\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"{{ai}}\"\n\
             [[route]]\nnumber = \"+18005550199\"\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"sip:ai@{closed};transport=tcp\"\n"
        );
        let mut rig = Rig::new(Transport::Udp, &keys(&capture, &routes)).await;
        let opts = InviteOpts::default();
        for (status, category) in [
            (486, "busy"),
            (600, "busy"),
            (603, "rejected"),
            (403, "rejected"),
            (480, "no_answer"),
            (408, "no_answer"),
            (503, "trunk_error"),
            (502, "trunk_error"),
            (504, "trunk_error"),
            (404, "failed"),
        ] {
            let sid = refused_call(&mut rig, &opts, status).await;
            let got = session_events(&capture, &sid, 3).await;
            assert_failed(&got, category, "sip_status", json!(status));
            assert_eq!(data(&got[2])["call_ended_by"], "agent");
        }

        // The AI agent never answers: 480 after the answer timeout.
        let (invite, ai_invite) = place_call(&mut rig, &opts).await;
        let sid = ai_invite.msg.header("X-OPENCX-SESSION-ID").unwrap().to_owned();
        let resp = final_answer(&mut rig.caller, Duration::from_secs(8)).await;
        assert_eq!(resp.status(), Some(480));
        rig.caller.send(&ack_for_non_2xx(&invite, &resp)).await;
        let got = session_events(&capture, &sid, 3).await;
        assert_failed(&got, "no_answer", "timeout", json!(408));
        assert_eq!(data(&got[2])["call_ended_by"], "system");

        // The AI agent cannot be reached: a transport failure.
        let unreachable = InviteOpts::default().called("+18005550199");
        let invite = rig.caller.invite(&unreachable);
        rig.caller.send(&invite).await;
        let resp = final_answer(&mut rig.caller, Duration::from_secs(5)).await;
        assert_eq!(resp.status(), Some(503));
        rig.caller.send(&ack_for_non_2xx(&invite, &resp)).await;
        let seen = capture
            .wait_for("the transport failure", SOON, |s| {
                s.iter().any(|c| c.delivered() && data(c)["failure_reason"] == "transport_failure")
            })
            .await;
        let failed = seen
            .iter()
            .find(|c| data(c)["failure_reason"] == "transport_failure")
            .unwrap();
        let sid = failed.json()["session_id"].as_str().unwrap().to_owned();
        let got = session_events(&capture, &sid, 3).await;
        assert_failed(&got, "trunk_error", "transport_failure", Value::Null);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_fires_failed_by_the_user_and_no_ended() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        let mut rig = Rig::new(Transport::Udp, &keys(&capture, "")).await;
        let (invite, ai_invite) = place_call(&mut rig, &InviteOpts::default()).await;
        let sid = ai_invite
            .msg
            .header("X-OPENCX-SESSION-ID")
            .unwrap()
            .to_owned();
        rig.agent.respond(&ai_invite, 180, &[], None).await;
        rig.caller
            .expect_response_to(Method::Invite, 180, WAIT)
            .await;
        rig.caller.send(&cancel_for(&invite)).await;
        rig.caller
            .expect_response_to(Method::Cancel, 200, WAIT)
            .await;
        let terminated = rig
            .caller
            .expect_response_to(Method::Invite, 487, WAIT)
            .await;
        rig.caller
            .send(&ack_for_non_2xx(&invite, &terminated.msg))
            .await;
        let cancel = rig.agent.expect_request(Method::Cancel, WAIT).await;
        rig.agent.respond(&cancel, 200, &[], None).await;
        rig.agent.respond(&ai_invite, 487, &[], None).await;
        let got = session_events(&capture, &sid, 3).await;
        assert_failed(&got, "failed", "cancelled", json!(487));
        assert_eq!(data(&got[2])["call_ended_by"], "user");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_that_succeeds_is_reported_and_the_call_ends_handed_off() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        let mut tr =
            common::scenarios::transfer::transfer_rig(Transport::Udp, &keys(&capture, "")).await;
        let mut m = common::scenarios::media::establish_media(&mut tr.rig).await;
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        let (_phone, _ok) = answer_target(&mut tr, &inv).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 200 OK\r\n");
        let bye = tr.rig.agent.expect_request(Method::Bye, WAIT).await;
        tr.rig.agent.respond(&bye, 200, &[], None).await;
        // The caller hangs up on the human.
        let bye = tr.rig.caller.bye(&mut m.call.caller_dlg);
        tr.rig.caller.send(&bye).await;
        tr.rig
            .caller
            .expect_response_to(Method::Bye, 200, WAIT)
            .await;
        let zbye = tr.zendesk.expect_request(Method::Bye, WAIT).await;
        tr.zendesk.respond(&zbye, 200, &[], None).await;

        let got = session_events(&capture, &m.call.session_id, 5).await;
        assert_eq!(
            types(&got),
            [
                "phone_call.started",
                "conversation.started",
                "phone_call.answered",
                "phone_call.transferred",
                "phone_call.ended"
            ]
        );
        let t = data(&got[3]);
        assert_eq!(t["outcome"], "completed");
        assert_eq!(t["sip_status"], 200);
        assert_eq!(t["failure_category"], Value::Null);
        assert_eq!(t["target"]["type"], "sip_uri");
        assert_eq!(t["target"]["sip_uri"], tr.target.as_str());
        assert_eq!(t["target"]["destination"], "zendesk");
        assert_eq!(t["attempt"], 1);
        let e = data(&got[4]);
        assert_eq!(e["ai_resolution_status"], "handed_off");
        assert_eq!(e["call_ended_by"], "user");
        assert_eq!(e["custom_data"]["participant_count"], 3);
        assert_eq!(e["custom_data"]["call_status"], "transferred");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_that_fails_reports_its_category_and_the_call_goes_on() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        let mut tr =
            common::scenarios::transfer::transfer_rig(Transport::Udp, &keys(&capture, "")).await;
        let mut m = common::scenarios::media::establish_media(&mut tr.rig).await;
        let refer_msg = refer(&mut tr, &mut m, "<tel:+14155550199>", 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        tr.zendesk.respond(&inv, 486, &[], None).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 486 Busy Here\r\n");
        bye_from_agent(&mut tr.rig, &mut m.call).await;

        let got = session_events(&capture, &m.call.session_id, 5).await;
        assert_eq!(types(&got)[3], "phone_call.transferred");
        let t = data(&got[3]);
        assert_eq!(t["outcome"], "failed");
        assert_eq!(t["sip_status"], 486);
        assert_eq!(t["failure_category"], "busy");
        assert_eq!(t["target"]["type"], "phone_number");
        assert_eq!(t["target"]["phone_number"], "+14155550199");
        assert_eq!(t["target"]["sip_uri"], Value::Null);
        let e = data(&got[4]);
        assert_eq!(types(&got)[4], "phone_call.ended");
        assert_eq!(e["ai_resolution_status"], "resolved");
        assert_eq!(e["call_ended_by"], "agent");
        assert_eq!(e["custom_data"]["participant_count"], 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_verifies_with_the_documented_scheme_and_filters_apply() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        let only_failed = Capture::start().await;
        let extra = format!(
            "webhooks = [{{ url = \"{}\", secret = \"{SECRET}\" }}, {{ url = \"{}\", secret = \"another-secret-9876543210\", events = [\"phone_call.failed\"] }}]\n\
             events.retry_base_ms = 50\nevents.retry_max_ms = 200\n",
            capture.url(),
            only_failed.url()
        );
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let sid = refused_call(&mut rig, &InviteOpts::default(), 486).await;
        let got = session_events(&capture, &sid, 3).await;
        for c in &got {
            assert_signed(c, SECRET);
        }
        let other = session_events(&only_failed, &sid, 1).await;
        assert_eq!(types(&other), ["phone_call.failed"]);
        assert_signed(&other[0], "another-secret-9876543210");
        assert_eq!(other[0].body, got[2].body, "the same event, byte for byte");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_is_retried_after_two_500s() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        capture.script(&[Reply::Status(500), Reply::Status(500)]);
        let mut rig = Rig::new(Transport::Udp, &keys(&capture, "")).await;
        let sid = refused_call(&mut rig, &InviteOpts::default(), 486).await;
        session_events(&capture, &sid, 3).await;
        let all = capture.requests();
        assert_eq!(all.len(), 5, "two refused attempts, then three deliveries");
        assert_eq!(
            all.iter().map(|c| c.answered).collect::<Vec<_>>(),
            [500, 500, 200, 200, 200]
        );
        for c in &all[1..3] {
            assert_eq!(c.body, all[0].body, "a retry sends the same body");
            assert_eq!(
                c.header("x-handoff-event-id"),
                all[0].header("x-handoff-event-id")
            );
            assert_signed(c, SECRET);
        }
        assert_eq!(all[0].json()["type"], "phone_call.started");
        assert!(
            all[1].at.duration_since(all[0].at) >= Duration::from_millis(20),
            "backoff"
        );
        let m = &rig.server.metrics().events;
        assert_eq!(
            m.retried_total.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_of_a_429_is_honoured() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        capture.script(&[Reply::RetryAfter(429, 1)]);
        let mut rig = Rig::new(Transport::Udp, &keys(&capture, "")).await;
        let sid = refused_call(&mut rig, &InviteOpts::default(), 486).await;
        session_events(&capture, &sid, 3).await;
        let all = capture.requests();
        assert_eq!(all[0].answered, 429);
        assert_eq!(all[1].body, all[0].body);
        let waited = all[1].at.duration_since(all[0].at);
        assert!(
            waited >= Duration::from_millis(950),
            "retried after {waited:?}, not the 1 s asked for"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_session_arrive_in_order_while_sessions_interleave() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        capture.script(&[Reply::Status(500); 8]);
        let mut rig = Rig::new(Transport::Udp, &keys(&capture, "")).await;
        let mut sids = Vec::new();
        for _ in 0..4 {
            sids.push(refused_call(&mut rig, &InviteOpts::default(), 486).await);
        }
        capture
            .wait_for("every event", SOON, |s| {
                s.iter().filter(|c| c.delivered()).count() >= 12
            })
            .await;
        let all = capture.requests();
        for sid in &sids {
            let attempts: Vec<&Captured> = all
                .iter()
                .filter(|c| c.json()["session_id"] == *sid)
                .collect();
            let delivered = of_session(&all, sid);
            assert_eq!(
                types(&delivered),
                [
                    "phone_call.started",
                    "conversation.started",
                    "phone_call.failed"
                ]
            );
            // No event is tried before the one before it was delivered.
            let order: Vec<Value> = delivered.iter().map(|c| c.json()["id"].clone()).collect();
            let mut at = 0;
            for a in attempts {
                let i = order.iter().position(|id| *id == a.json()["id"]).unwrap();
                assert!(
                    i >= at,
                    "session {sid}: event {i} attempted after event {at}"
                );
                if a.delivered() {
                    at = i + 1;
                }
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_subscriber_does_not_delay_call_setup() {
    bounded(LIMIT, async {
        let capture = Capture::start().await;
        capture.set_default(Reply::Hang);
        let extra = keys(
            &capture,
            "events.request_timeout_ms = 60000\nevents.max_in_flight = 2",
        );
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        for _ in 0..6 {
            let sent = Instant::now();
            let mut call = establish(&mut rig, InviteOpts::default()).await;
            let took = sent.elapsed();
            assert!(took < Duration::from_secs(2), "call set-up took {took:?}");
            bye_from_caller(&mut rig, &mut call).await;
        }
        capture
            .wait_for("a hanging request", SOON, |s| !s.is_empty())
            .await;
        assert!(capture.delivered().is_empty());
        let depth = || {
            rig.server
                .metrics()
                .events
                .outbox_depth
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert!(
            common::eventually(SOON, || depth() == 24).await,
            "24 events queued, depth {}",
            depth()
        );
    })
    .await;
}

#[path = "events/sigkill.rs"]
mod sigkill;
