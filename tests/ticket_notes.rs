//! The private note on the Zendesk ticket at handoff (issue 16 item 3), end to
//! end: real SIP calls, the ticket stamped through the webhook, a transfer the
//! target answers, and the note as the fake Zendesk API receives it.

mod common;

use common::scenarios::media::{establish_media, MediaCall};
use common::scenarios::transfer::{
    answer_target, expect_notify, expect_target_invite, stamp_via_webhook, transfer_rig_dest,
    TransferRig,
};
use common::scenarios::{bye_from_caller, count};
use common::zendesk::{comments_path, ticket_path, FakeZendesk, Reply};
use common::{bounded, eventually, TestUa, Transport, WAIT};
use handoff::sip::message::{Message, Method};
use serde_json::{json, Value};
use std::future::Future;
use std::time::Duration;

const T: Transport = Transport::Udp;
const LANDS: Duration = Duration::from_secs(10);
const API_KEY: &str = "notes-test-api-key-0123456789";

async fn run<F: Future<Output = ()>>(f: F) {
    bounded(Duration::from_secs(40), f).await;
}

/// handoff pointed at `z`, the "zendesk" destination with `ticket_note = true`
/// (it is on loopback, not a Zendesk SIP-IN host, so the default is off).
async fn rig(z: &FakeZendesk, dest: &str) -> TransferRig {
    let extra = format!("{}http.api_key = \"{API_KEY}\"\n", z.config());
    transfer_rig_dest(T, dest, &extra, TestUa::agent(T).await).await
}

/// Ticket 100, called from the tests' caller (the stamp is confirmed against it).
fn ticket(z: &FakeZendesk) {
    z.ticket(100, 7, None);
    z.user(7, json!({}));
}

/// The AI agent's REFER to the rig's destination, with `headers`; 202.
async fn refer_with(
    tr: &mut TransferRig,
    m: &mut MediaCall,
    headers: &[(&'static str, &str)],
) -> Message {
    let mut req = tr
        .rig
        .agent
        .in_dialog(&mut m.call.agent_dlg, Method::Refer, None);
    req.push_checked("Refer-To", &format!("<{}>", tr.target))
        .expect("header");
    for (n, v) in headers {
        // Unchecked: the test sends lines over handoff's own 1,000-byte limit.
        req.push(n, v.to_string());
    }
    tr.rig.agent.send(&req).await;
    tr.rig
        .agent
        .expect_response_to(Method::Refer, 202, WAIT)
        .await;
    req
}

/// REFER, the target answers, the caller is switched, the AI leg released.
async fn complete_transfer(
    tr: &mut TransferRig,
    m: &mut MediaCall,
    headers: &[(&'static str, &str)],
) {
    let refer = refer_with(tr, m, headers).await;
    expect_notify(tr, m, &refer).await;
    let inv = expect_target_invite(tr).await;
    answer_target(tr, &inv).await;
    let (frag, _) = expect_notify(tr, m, &refer).await;
    assert_eq!(frag, "SIP/2.0 200 OK\r\n");
    let bye = tr.rig.agent.expect_request(Method::Bye, WAIT).await;
    tr.rig.agent.respond(&bye, 200, &[], None).await;
}

/// The comments on ticket 100 once `n` have landed.
async fn notes(z: &FakeZendesk, n: usize) -> Vec<Value> {
    let landed = eventually(LANDS, || z.comments(100).len() >= n).await;
    assert!(
        landed,
        "{} notes on ticket 100, wanted {n}",
        z.comments(100).len()
    );
    z.comments(100)
}

fn puts(z: &FakeZendesk) -> usize {
    z.hits_on(&ticket_path(100))
        .iter()
        .filter(|h| h.method == "PUT")
        .count()
}

/// The note is private, plain `body` (never `html_body`), and says who handed
/// over whom.
fn assert_note_shape(note: &Value, session_id: &str) -> String {
    assert_eq!(note["public"], false, "internal note: {note}");
    assert!(note["html_body"].is_null(), "plain body only: {note}");
    let body = note["body"].as_str().expect("body").to_owned();
    assert!(
        body.contains("The AI agent handed this caller over"),
        "{body}"
    );
    assert!(body.contains("AI agent: agent-test\n"), "{body}");
    assert!(body.contains(&format!("Session: {session_id}\n")), "{body}");
    assert!(body.contains("Caller: +14155551212\n"), "{body}");
    assert!(body.contains("Call duration at handoff: "), "{body}");
    assert!(body.contains("Transferred to: zendesk\n"), "{body}");
    assert!(
        body.contains(&format!("handoff-note: {session_id}/0")),
        "{body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_transfer_leaves_one_private_note_with_the_refer_summary_even_after_a_429() {
    run(async {
        let z = FakeZendesk::start().await;
        ticket(&z);
        z.script_put(
            &ticket_path(100),
            vec![Reply::error(429, "TooManyRequests", "slow down").retry_after("1")],
        );
        let mut tr = rig(&z, ", ticket_note = true").await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 100).await;
        complete_transfer(
            &mut tr,
            &mut m,
            &[("X-OPENCX-SUMMARY", "Caller wants a refund for order 42.")],
        )
        .await;
        let all = notes(&z, 1).await;
        let body = assert_note_shape(&all[0], &m.call.session_id);
        assert!(
            body.contains("Summary from the AI agent:\nCaller wants a refund for order 42.\n"),
            "{body}"
        );
        let server = &tr.rig.server;
        let posted = eventually(LANDS, || {
            count(server, |x| &x.ticket_notes_posted_total) == 1
        })
        .await;
        assert!(posted);
        // The 429 was retried after its Retry-After; a 429 adds nothing, so no
        // look at the comments was needed.
        assert_eq!(puts(&z), 2);
        assert!(z.hits_on(&comments_path(100)).is_empty());
        // Nothing more comes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(z.comments(100).len(), 1, "exactly one note");
        assert_eq!(count(server, |x| &x.ticket_notes_failed_total), 0);
        bye_from_caller_to_target(&mut tr, &mut m).await;
    })
    .await;
}

/// The caller hangs up after the transfer: the target gets the BYE.
async fn bye_from_caller_to_target(tr: &mut TransferRig, m: &mut MediaCall) {
    let bye = tr.rig.caller.bye(&mut m.call.caller_dlg);
    tr.rig.caller.send(&bye).await;
    tr.rig
        .caller
        .expect_response_to(Method::Bye, 200, WAIT)
        .await;
    let zbye = tr.zendesk.expect_request(Method::Bye, WAIT).await;
    tr.zendesk.respond(&zbye, 200, &[], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_a_lost_answer_finds_the_note_and_posts_no_second() {
    run(async {
        let z = FakeZendesk::start().await;
        ticket(&z);
        // Zendesk adds the comment but the answer is a 500 (a lost answer).
        z.script_put(
            &ticket_path(100),
            vec![Reply::error(500, "InternalError", "oops").applied()],
        );
        let mut tr = rig(&z, ", ticket_note = true").await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 100).await;
        complete_transfer(&mut tr, &mut m, &[]).await;
        let server = &tr.rig.server;
        let deduplicated = eventually(LANDS, || {
            count(server, |x| &x.ticket_notes_deduplicated_total) == 1
        })
        .await;
        assert!(deduplicated, "the retry looked first");
        assert_eq!(puts(&z), 1, "no second PUT");
        assert_eq!(z.hits_on(&comments_path(100)).len(), 1);
        let all = z.comments(100);
        assert_eq!(all.len(), 1, "exactly one note: {all:?}");
        let body = assert_note_shape(&all[0], &m.call.session_id);
        assert!(body.contains("The AI agent gave no summary."), "{body}");
        assert_eq!(count(server, |x| &x.ticket_notes_posted_total), 1);
        bye_from_caller_to_target(&mut tr, &mut m).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_api_summary_is_bounded_and_neutralised_in_the_note() {
    run(async {
        let z = FakeZendesk::start().await;
        ticket(&z);
        let mut tr = rig(&z, ", ticket_note = true").await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 100).await;
        let url = format!(
            "http://{}/v1/sessions/{}",
            tr.rig.server.http_addr(),
            m.call.session_id
        );
        let patch = |body: String| {
            reqwest::Client::new()
                .patch(&url)
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        // 1 MB: refused whole (the body cap or the summary's 2,000 bytes).
        let huge = json!({"summary": "x".repeat(1 << 20)}).to_string();
        let status = patch(huge).await.expect("patch").status().as_u16();
        assert!(status == 400 || status == 413, "{status}");
        // A control character other than a line break: 400 naming the field.
        let r = patch(json!({"summary": "bell\u{7}"}).to_string())
            .await
            .expect("patch");
        assert_eq!(r.status().as_u16(), 400);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["field"], "summary", "{v}");
        // Hostile but acceptable: markup, links, a mention, CR/LF.
        let hostile = "Refund for order 42.\r\n<script>alert(1)</script>\r\n\
                       [click here](https://evil.example/x) @admin\r\n# Heading";
        let r = patch(json!({"summary": hostile}).to_string())
            .await
            .expect("patch");
        assert_eq!(r.status().as_u16(), 200);
        complete_transfer(&mut tr, &mut m, &[]).await;
        let all = notes(&z, 1).await;
        let body = assert_note_shape(&all[0], &m.call.session_id);
        assert!(
            body.contains("Summary from the AI agent:\nRefund for order 42.\n"),
            "{body}"
        );
        let summary = body
            .split("Summary from the AI agent:\n")
            .nth(1)
            .expect("summary");
        for bad in ["<", ">", "[", "]", "://", "@", "\r", "\n#"] {
            assert!(!summary.contains(bad), "{bad:?} in {summary:?}");
        }
        assert!(summary.contains("‹script›alert(1)‹/script›"), "{summary}");
        assert!(summary.contains("hxxps(:)//evil.example/x"), "{summary}");
        bye_from_caller_to_target(&mut tr, &mut m).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_refer_summary_is_cut_and_its_markup_neutralised() {
    run(async {
        let z = FakeZendesk::start().await;
        ticket(&z);
        let mut tr = rig(&z, ", ticket_note = true").await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 100).await;
        let long = format!("<img src=x onerror=alert(1)> {}", "y".repeat(10_000));
        complete_transfer(&mut tr, &mut m, &[("X-OPENCX-SUMMARY", &long)]).await;
        let all = notes(&z, 1).await;
        let body = assert_note_shape(&all[0], &m.call.session_id);
        assert!(body.len() < 2_600, "bounded: {} bytes", body.len());
        assert!(body.contains("‹img src=x onerror=alert(1)›"), "{body}");
        assert!(body.contains(" (cut)\n"), "{body}");
        assert!(!body.contains('<'), "{body}");
        bye_from_caller_to_target(&mut tr, &mut m).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transfer_leaves_no_note() {
    run(async {
        let z = FakeZendesk::start().await;
        ticket(&z);
        let mut tr = rig(&z, ", ticket_note = true").await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 100).await;
        let refer = refer_with(&mut tr, &mut m, &[("X-OPENCX-SUMMARY", "busy case")]).await;
        expect_notify(&mut tr, &m, &refer).await;
        let inv = expect_target_invite(&mut tr).await;
        tr.zendesk.respond(&inv, 486, &[], None).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer).await;
        assert_eq!(frag, "SIP/2.0 486 Busy Here\r\n");
        bye_from_caller(&mut tr.rig, &mut m.call).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(puts(&z), 0, "no note for a failed transfer");
        assert!(z.comments(100).is_empty());
        assert_eq!(count(&tr.rig.server, |x| &x.ticket_notes_posted_total), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ticket_or_a_destination_without_ticket_note_or_notes_off_means_no_note() {
    run(async {
        let z = FakeZendesk::start().await;
        ticket(&z);
        // No ticket stamped: nothing to note on.
        let mut tr = rig(&z, ", ticket_note = true").await;
        let mut m = establish_media(&mut tr.rig).await;
        complete_transfer(&mut tr, &mut m, &[("X-OPENCX-SUMMARY", "s")]).await;
        bye_from_caller_to_target(&mut tr, &mut m).await;
        // A ticket, but the destination (not a Zendesk SIP-IN host) keeps the
        // default: no note.
        let mut tr2 = rig(&z, "").await;
        let mut m2 = establish_media(&mut tr2.rig).await;
        stamp_via_webhook(&tr2.rig, 100).await;
        complete_transfer(&mut tr2, &mut m2, &[("X-OPENCX-SUMMARY", "s")]).await;
        bye_from_caller_to_target(&mut tr2, &mut m2).await;
        // A ticket and a destination that wants notes, but notes are off globally.
        let extra = format!(
            "{}zendesk.ticket_notes = false\nhttp.api_key = \"{API_KEY}\"\n",
            z.config()
        );
        let mut tr3 =
            transfer_rig_dest(T, ", ticket_note = true", &extra, TestUa::agent(T).await).await;
        let mut m3 = establish_media(&mut tr3.rig).await;
        stamp_via_webhook(&tr3.rig, 100).await;
        complete_transfer(&mut tr3, &mut m3, &[("X-OPENCX-SUMMARY", "s")]).await;
        bye_from_caller_to_target(&mut tr3, &mut m3).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let all_puts = z.hits().iter().filter(|h| h.method == "PUT").count();
        assert_eq!(all_puts, 0, "no note anywhere");
        for server in [&tr.rig.server, &tr2.rig.server, &tr3.rig.server] {
            assert_eq!(count(server, |x| &x.ticket_notes_posted_total), 0);
            assert_eq!(count(server, |x| &x.ticket_notes_failed_total), 0);
        }
    })
    .await;
}

/// The note goes to the Zendesk account of the session's org: with the org listed
/// in `[[zendesk.accounts]]`, its own account gets the note (the ticket is
/// confirmed there too) and the default `[zendesk]` account gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_note_goes_to_the_account_of_the_sessions_org() {
    run(async {
        let default = FakeZendesk::start().await;
        let own = FakeZendesk::start().await;
        ticket(&own);
        let extra = format!(
            "{}http.api_key = \"{API_KEY}\"\n\
             \n[[zendesk.accounts]]\norg_id = \"org-test\"\naccount_id = 4242\n\
             base_url = \"{}\"\nemail = \"{}\"\napi_token = \"{}\"\n\
             \n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"{{ai}}\"\n",
            default.config(),
            own.base_url(),
            common::zendesk::EMAIL,
            common::zendesk::API_TOKEN,
        );
        let mut tr =
            transfer_rig_dest(T, ", ticket_note = true", &extra, TestUa::agent(T).await).await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 100).await;
        complete_transfer(&mut tr, &mut m, &[]).await;
        let all = notes(&own, 1).await;
        assert_note_shape(&all[0], &m.call.session_id);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(default.hits().is_empty(), "the default account is never asked");
        assert_eq!(own.comments(100).len(), 1);
        bye_from_caller_to_target(&mut tr, &mut m).await;
    })
    .await;
}
