//! Zendesk event-subscription webhooks (issue 16 item 1): a `ticket.created`
//! envelope on the voice-prefetch endpoint makes handoff fetch the ticket from the
//! org's Zendesk account and stamp the caller's live session, as the trigger does.
//! Another account's event is refused, a duplicate changes nothing, other types
//! are ignored, hostile bodies get JSON errors naming the field.

mod common;

use common::scenarios::media::establish_media;
use common::scenarios::transfer::{expect_notify, expect_target_invite, refer, transfer_rig};
use common::scenarios::{bye_from_caller, establish, session};
use common::zendesk::{ticket_path, FakeZendesk, API_TOKEN, EMAIL};
use common::zendesk_hooks::{post_as, ticket_created};
use common::{bounded, InviteOpts, Transport};
use serde_json::json;
use std::future::Future;
use std::time::Duration;

const T: Transport = Transport::Udp;
const ACCOUNT: u64 = 88888888;
const ORG: &str = "org-test";

async fn run<F: Future<Output = ()>>(f: F) {
    bounded(Duration::from_secs(30), f).await;
}

/// handoff pointed at `z` as the default account, with its account id.
fn config(z: &FakeZendesk) -> String {
    format!("{}zendesk.account_id = {ACCOUNT}\n", z.config())
}

fn webhook_count(server: &handoff::server::Server, outcome: &str) -> bool {
    server.metrics().render_prometheus().contains(&format!(
        "handoff_webhook_requests_total{{outcome=\"{outcome}\"}} 1\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_created_event_stamps_the_live_call_and_the_transfer_carries_it() {
    run(async {
        let z = FakeZendesk::start().await;
        z.ticket(35436, 7, None);
        z.user(7, json!({}));
        let mut tr = transfer_rig(T, &config(&z)).await;
        let mut m = establish_media(&mut tr.rig).await;
        let body = ticket_created(ACCOUNT, "01HN5G9ZDNDWZQ2WRB7T4QX7KZ", 35436);
        let inv = [
            ("x-zendesk-webhook-invocation-id", "inv-1"),
            ("x-zendesk-account-id", "88888888"),
        ];
        let (st, v) = post_as(&tr.rig, ORG, &body, None, &inv).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["success"], true, "{v}");
        assert_eq!(v["ticket_id"], 35436, "{v}");
        let sid = v["session_id"].as_str().expect("session id").to_owned();
        assert_eq!(sid, m.call.session_id);
        assert_eq!(session(&tr.rig.server, &sid).zendesk_ticket_id, Some(35436));
        // The ticket was fetched (once: the enrichment reuses it).
        assert_eq!(z.hits_on(&ticket_path(35436)).len(), 1);
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let invite = expect_target_invite(&mut tr).await;
        assert_eq!(
            invite.msg.header("X-OPENCX-ZENDESK-TICKET-ID"),
            Some("35436")
        );
        assert_eq!(invite.msg.header("X-Zendesk-Ticket-Id"), Some("35436"));
        tr.zendesk.respond(&invite, 486, &[], None).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        bye_from_caller(&mut tr.rig, &mut m.call).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_before_the_call_is_success_false_and_a_ticket_of_another_caller_stamps_nothing() {
    run(async {
        let z = FakeZendesk::start().await;
        z.ticket(1, 7, None);
        z.ticket_from(2, 8, None, "+14155559999");
        let mut tr = transfer_rig(T, &config(&z)).await;
        let (st, v) = post_as(&tr.rig, ORG, &ticket_created(ACCOUNT, "e1", 1), None, &[]).await;
        assert_eq!((st, &v["success"]), (200, &json!(false)), "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("no live phone session"),
            "{v}"
        );
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        let (st, v) = post_as(&tr.rig, ORG, &ticket_created(ACCOUNT, "e2", 2), None, &[]).await;
        assert_eq!((st, &v["success"]), (200, &json!(false)), "{v}");
        assert_eq!(
            session(&tr.rig.server, &call.session_id).zendesk_ticket_id,
            None
        );
        // The caller's own ticket, now that the call is up (a new event id).
        let (_, v) = post_as(&tr.rig, ORG, &ticket_created(ACCOUNT, "e3", 1), None, &[]).await;
        assert_eq!(v["success"], true, "{v}");
        assert_eq!(
            session(&tr.rig.server, &call.session_id).zendesk_ticket_id,
            Some(1)
        );
        // Idempotent: the same ticket in a new event (another webhook, a re-sent
        // event) succeeds and changes nothing; another ticket of the same caller
        // does not replace the first.
        let (_, v) = post_as(&tr.rig, ORG, &ticket_created(ACCOUNT, "e4", 1), None, &[]).await;
        assert_eq!(v["success"], true, "{v}");
        z.ticket(3, 7, None);
        let (_, v) = post_as(&tr.rig, ORG, &ticket_created(ACCOUNT, "e5", 3), None, &[]).await;
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["ticket_id"], 1, "the first ticket kept: {v}");
        assert_eq!(
            session(&tr.rig.server, &call.session_id).zendesk_ticket_id,
            Some(1)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_another_account_is_refused() {
    run(async {
        let za = FakeZendesk::start().await;
        let zb = FakeZendesk::start().await;
        za.ticket(5, 7, None);
        zb.ticket(5, 7, None);
        let entry = |org: &str, id: u64, z: &FakeZendesk| {
            format!(
                "\n[[zendesk.accounts]]\norg_id = \"{org}\"\naccount_id = {id}\nbase_url = \"{}\"\nemail = \"{EMAIL}\"\napi_token = \"{API_TOKEN}\"\n",
                z.base_url()
            )
        };
        let extra = format!(
            "{}{}\n[[route]]\ndefault = true\norg_id = \"org-b\"\nagent_id = \"a\"\nai_agent_uri = \"{{ai}}\"\n",
            entry("org-a", 111, &za),
            entry("org-b", 222, &zb)
        );
        let mut tr = transfer_rig(T, &extra).await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        // org-b's token, org-a's account id.
        let (st, v) = post_as(&tr.rig, "org-b", &ticket_created(111, "x1", 5), None, &[]).await;
        assert_eq!(st, 403, "{v}");
        assert_eq!(v["field"], "account_id", "{v}");
        // The right id in the body, another in Zendesk's header.
        let hdr = [("x-zendesk-account-id", "111")];
        let (st, v) = post_as(&tr.rig, "org-b", &ticket_created(222, "x2", 5), None, &hdr).await;
        assert_eq!(st, 403, "{v}");
        assert_eq!(v["field"], "x-zendesk-account-id", "{v}");
        assert!(za.hits().is_empty() && zb.hits().is_empty(), "no API asked");
        assert_eq!(session(&tr.rig.server, &call.session_id).zendesk_ticket_id, None);
        assert_eq!(
            common::scenarios::count(&tr.rig.server, |m| &m.webhook_events_wrong_account_total),
            2
        );
        // Its own account id stamps, asking its own account only.
        let (st, v) = post_as(&tr.rig, "org-b", &ticket_created(222, "x3", 5), None, &[]).await;
        assert_eq!((st, &v["success"]), (200, &json!(true)), "{v}");
        assert!(za.hits().is_empty());
        assert_eq!(zb.hits_on(&ticket_path(5)).len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_invocation_or_event_id_changes_nothing() {
    run(async {
        let z = FakeZendesk::start().await;
        z.ticket(10, 7, None);
        z.ticket(11, 7, None);
        let mut tr = transfer_rig(T, &config(&z)).await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        let inv = [("x-zendesk-webhook-invocation-id", "inv-9")];
        let (_, first) = post_as(
            &tr.rig,
            ORG,
            &ticket_created(ACCOUNT, "ev-9", 10),
            None,
            &inv,
        )
        .await;
        assert_eq!(first["success"], true, "{first}");
        // Zendesk's retry of the same invocation.
        let (st, v) = post_as(
            &tr.rig,
            ORG,
            &ticket_created(ACCOUNT, "ev-9", 10),
            None,
            &inv,
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(v["duplicate"], true, "{v}");
        assert_eq!(v["success"], false, "{v}");
        // The same invocation id carrying another ticket: still nothing done.
        let (_, v) = post_as(
            &tr.rig,
            ORG,
            &ticket_created(ACCOUNT, "ev-10", 11),
            None,
            &inv,
        )
        .await;
        assert_eq!(v["duplicate"], true, "{v}");
        // The same event from another webhook (another invocation id).
        let other = [("x-zendesk-webhook-invocation-id", "inv-10")];
        let (_, v) = post_as(
            &tr.rig,
            ORG,
            &ticket_created(ACCOUNT, "ev-9", 10),
            None,
            &other,
        )
        .await;
        assert_eq!(v["duplicate"], true, "{v}");
        assert_eq!(z.hits_on(&ticket_path(10)).len(), 1, "fetched once");
        assert!(z.hits_on(&ticket_path(11)).is_empty(), "never fetched");
        assert_eq!(
            session(&tr.rig.server, &call.session_id).zendesk_ticket_id,
            Some(10)
        );
        let server = &tr.rig.server;
        assert_eq!(
            common::scenarios::count(server, |m| &m.webhook_events_duplicate_total),
            3
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_event_types_are_ignored_with_200() {
    run(async {
        let z = FakeZendesk::start().await;
        let tr = transfer_rig(T, &config(&z)).await;
        let body = json!({
            "type": "zen:event-type:ticket.status_changed", "account_id": ACCOUNT,
            "id": "e-1", "subject": "zen:ticket:5", "detail": {"id": "5"}, "event": {}
        })
        .to_string();
        let (st, v) = post_as(&tr.rig, ORG, &body, None, &[]).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(
            (&v["success"], &v["ignored"]),
            (&json!(false), &json!(true)),
            "{v}"
        );
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or("")
                .contains("ticket.status_changed"),
            "{v}"
        );
        assert!(z.hits().is_empty());
        assert!(webhook_count(&tr.rig.server, "ignored"));
        // An envelope carries the whole ticket: a long description is no 413.
        let long = json!({
            "type": "zen:event-type:ticket.comment_added", "account_id": ACCOUNT,
            "id": "e-2", "subject": "zen:ticket:5",
            "detail": {"id": "5", "description": "d".repeat(60 * 1024)}, "event": {}
        })
        .to_string();
        let (st, v) = post_as(&tr.rig, ORG, &long, None, &[]).await;
        assert_eq!((st, &v["ignored"]), (200, &json!(true)), "{v}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_api_credentials_or_an_account_id_an_event_is_not_acted_on() {
    run(async {
        let tr = transfer_rig(T, &format!("zendesk.account_id = {ACCOUNT}\n")).await;
        let (st, v) = post_as(&tr.rig, ORG, &ticket_created(ACCOUNT, "e", 5), None, &[]).await;
        assert_eq!((st, &v["success"]), (200, &json!(false)), "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("no API credentials"),
            "{v}"
        );
        let z = FakeZendesk::start().await;
        let tr = transfer_rig(T, &z.config()).await;
        let (st, v) = post_as(&tr.rig, ORG, &ticket_created(ACCOUNT, "e", 5), None, &[]).await;
        assert_eq!((st, &v["success"]), (200, &json!(false)), "{v}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or("")
                .contains("zendesk.account_id"),
            "{v}"
        );
        assert!(z.hits().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_event_bodies_get_json_errors_naming_the_field() {
    run(async {
        let z = FakeZendesk::start().await;
        let tr = transfer_rig(T, &config(&z)).await;
        let good = ticket_created(ACCOUNT, "e-h", 5);
        let deep = format!(
            r#"{{"type": "zen:event-type:ticket.created", "account_id": {ACCOUNT}, "id": "d", "subject": "zen:ticket:5", "detail": {{"id": {}1{}}}}}"#,
            "[".repeat(3000),
            "]".repeat(3000)
        );
        let huge = good.replace("\"event\":{}", &format!("\"event\":{{\"x\":\"{}\"}}", "a".repeat(130 * 1024)));
        let cases = [
            (good.replace("zen:ticket:5", "zen:ticket:1; DROP"), 400, "subject"),
            (good.replace("zen:ticket:5", "zen:ticket:5\\r\\nX: 1"), 400, "subject"),
            (
                good.replacen("\"account_id\":88888888", "\"account_id\":88888888,\"account_id\":111", 1),
                400,
                "account_id",
            ),
            (good.replace("88888888", "\"88888888; x\""), 400, "account_id"),
            (good.replacen("\"id\":\"e-h\"", "\"id\":\"e h\"", 1), 400, "id"),
            (good.replace("\"id\":\"5\"", "\"id\":\"6\""), 400, "detail.id"),
            (deep, 400, "body"),
            (huge, 413, "body"),
        ];
        for (body, status, field) in cases {
            let (st, v) = post_as(&tr.rig, ORG, &body, None, &[]).await;
            let head: String = body.chars().take(120).collect();
            assert_eq!(st, status, "{head}: {v}");
            assert_eq!(v["field"], field, "{head}: {v}");
            assert!(v["error"].is_string(), "{v}");
        }
        let bad_inv = [("x-zendesk-webhook-invocation-id", "a b")];
        let (st, v) = post_as(&tr.rig, ORG, &good, None, &bad_inv).await;
        assert_eq!((st, &v["field"]), (400, &json!("x-zendesk-webhook-invocation-id")), "{v}");
        assert!(z.hits().is_empty(), "nothing reached Zendesk");
    })
    .await;
}
