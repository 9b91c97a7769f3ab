//! Contact enrichment from Zendesk (issue 6) end to end: real SIP calls make the
//! sessions, the voice-prefetch webhook stamps them, handoff fetches the ticket, its
//! requester and the organization from a fake Zendesk on loopback, and the contact
//! lands on the session, in the contact store and on the transfer INVITE.

mod common;

use common::scenarios::media::establish_media;
use common::scenarios::transfer::{
    expect_notify, expect_target_invite, post_webhook, refer, stamp_via_webhook, transfer_rig,
    webhook_url, TransferRig,
};
use common::scenarios::{bye_from_caller, count, establish, session, table};
use common::zendesk::{org_path, ticket_path, user_path, FakeZendesk, Reply};
use common::{bounded, eventually, InviteOpts, Transport, CALLER_E164};
use handoff::metrics::Metrics;
use handoff::server::Server;
use handoff::session::{Session, SessionId};
use serde_json::json;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

const T: Transport = Transport::Udp;
/// Generous: the machine may be loaded.
const LANDS: Duration = Duration::from_secs(10);

async fn run<F: Future<Output = ()>>(f: F) {
    bounded(Duration::from_secs(30), f).await;
}

/// Polls until the session has a contact from Zendesk; returns it.
async fn enriched(server: &Server, id: &str) -> Session {
    let landed = eventually(LANDS, || {
        session(server, id)
            .contact
            .is_some_and(|c| c.zendesk_user_id.is_some())
    })
    .await;
    assert!(
        landed,
        "no contact enriched on {id}: {:?}",
        session(server, id)
    );
    session(server, id)
}

/// Polls until a counter reaches `n`.
async fn counted(server: &Server, n: u64, pick: impl Fn(&Metrics) -> &AtomicU64 + Copy) {
    let reached = eventually(LANDS, || count(server, pick) >= n).await;
    assert!(reached, "counter stays at {} < {n}", count(server, pick));
}

/// A rig with handoff pointed at `z` (plus `extra` config).
async fn rig(z: &FakeZendesk, extra: &str) -> TransferRig {
    transfer_rig(T, &format!("{}{extra}", z.config())).await
}

/// The usual Zendesk: ticket 100 by user 7 of organization 50.
fn acme(z: &FakeZendesk) {
    z.ticket(100, 7, Some(50));
    z.user(
        7,
        json!({"organization_id": 50, "user_fields": {"tier": "gold", "vip": true}}),
    );
    z.organization(50, json!({"plan": "enterprise", "seats": 40}));
}

/// Enrichment finished without changing the session (the call's contact is None).
async fn assert_changed_nothing(server: &Server, id: &str) {
    counted(server, 1, |m| &m.enrichments_failed_total).await;
    let s = session(server, id);
    assert_eq!(s.contact, None);
    assert_eq!(s.contact_id, None);
    assert_eq!(count(server, |m| &m.enrichments_total), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_requester_and_org_fill_the_contact_with_org_fields_prefixed() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 100).await;
        let s = enriched(&tr.rig.server, &call.session_id).await;
        let c = s.contact.expect("contact");
        assert_eq!(c.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(c.email.as_deref(), Some("ada@example.com"));
        assert_eq!(c.phone.as_deref(), Some("+14155551212"), "E.164");
        assert_eq!(c.zendesk_user_id, Some(7));
        assert_eq!(c.external_id.as_deref(), Some("crm-ada"));
        assert_eq!(c.custom_data["tier"], json!("gold"));
        assert_eq!(c.custom_data["vip"], json!(true));
        assert_eq!(c.custom_data["org_plan"], json!("enterprise"));
        assert_eq!(c.custom_data["org_seats"], json!(40));
        assert_eq!(c.custom_data.len(), 4);
        let id = s.contact_id.expect("a contact id");
        assert!(id.starts_with("ct-"), "{id}");
        // Driven by the ticket id: ticket, user, organization, nothing else (no search).
        let paths: Vec<String> = z.hits().into_iter().map(|h| h.path).collect();
        assert_eq!(paths, [ticket_path(100), user_path(7), org_path(50)]);
        assert!(z.hits().iter().all(|h| h
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))));
        let server = &tr.rig.server;
        assert_eq!(count(server, |m| &m.enrichments_total), 1);
        assert_eq!(count(server, |m| &m.zendesk_requests_ok_total), 3);
        let text = server.metrics().render_prometheus();
        assert!(text.contains("handoff_enrichments_total 1\n"), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_without_organization_gets_user_fields_only() {
    run(async {
        let z = FakeZendesk::start().await;
        z.ticket(101, 8, None);
        z.user(8, json!({"user_fields": {"tier": "silver"}}));
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 101).await;
        let c = enriched(&tr.rig.server, &call.session_id)
            .await
            .contact
            .expect("contact");
        assert_eq!(c.custom_data.len(), 1);
        assert_eq!(c.custom_data["tier"], json!("silver"));
        assert!(z.hits().iter().all(|h| !h.path.contains("organizations")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_without_email_or_phone_still_gets_a_contact() {
    run(async {
        let z = FakeZendesk::start().await;
        z.ticket(102, 9, None);
        z.user(
            9,
            json!({"name": "Caller 4155551212", "email": null, "phone": null, "external_id": null}),
        );
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 102).await;
        let s = enriched(&tr.rig.server, &call.session_id).await;
        let c = s.contact.expect("contact");
        assert_eq!(c.name.as_deref(), Some("Caller 4155551212"));
        assert_eq!((c.email, c.phone, c.external_id), (None, None, None));
        assert!(s.contact_id.is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_429_waits_its_retry_after_then_succeeds() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        z.script(
            &user_path(7),
            vec![Reply::error(429, "TooManyRequests", "Rate limited").retry_after("1")],
        );
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 100).await;
        enriched(&tr.rig.server, &call.session_id).await;
        let hits = z.hits_on(&user_path(7));
        assert_eq!(hits.len(), 2);
        let waited = hits[1].at.duration_since(hits[0].at);
        assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
        let server = &tr.rig.server;
        assert_eq!(count(server, |m| &m.zendesk_rate_limited_total), 1);
        assert_eq!(count(server, |m| &m.zendesk_retries_total), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_twice_then_success_is_retried() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        z.script(
            &ticket_path(100),
            vec![
                Reply::error(500, "InternalError", "boom"),
                Reply::text(503, "Service Unavailable"),
            ],
        );
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 100).await;
        enriched(&tr.rig.server, &call.session_id).await;
        assert_eq!(z.hits_on(&ticket_path(100)).len(), 3);
        assert_eq!(count(&tr.rig.server, |m| &m.zendesk_retries_total), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_401_is_counted_not_retried_and_changes_nothing() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        // The ticket confirmed the stamp; the requester's fetch is refused.
        z.script(
            &user_path(7),
            vec![Reply::error(401, "Couldn't authenticate you", "")],
        );
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 100).await;
        assert_changed_nothing(&tr.rig.server, &call.session_id).await;
        assert_eq!(z.hits_on(&user_path(7)).len(), 1, "not retried");
        assert_eq!(z.hits().len(), 2, "the ticket, once");
        assert_eq!(count(&tr.rig.server, |m| &m.zendesk_auth_failures_total), 1);
        assert_eq!(count(&tr.rig.server, |m| &m.zendesk_retries_total), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refire_of_the_same_ticket_retries_a_failed_enrichment() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        z.script(
            &user_path(7),
            vec![Reply::error(401, "Couldn't authenticate you", "")],
        );
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 100).await;
        assert_changed_nothing(&tr.rig.server, &call.session_id).await;
        // Zendesk fires the trigger again (same ticket): idempotent for the stamp,
        // a second chance for the contact.
        stamp_via_webhook(&tr.rig, 100).await;
        let s = enriched(&tr.rig.server, &call.session_id).await;
        assert_eq!(s.zendesk_ticket_id, Some(100));
        let hits = z.hits().len();
        // Once enriched, a further re-fire fetches only the ticket, to confirm
        // the stamp (issue 12): not the requester or the organization again.
        stamp_via_webhook(&tr.rig, 100).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            z.hits().len(),
            hits + 1,
            "an enriched session is not fetched again"
        );
        assert_eq!(
            z.hits().last().map(|h| h.path.clone()),
            Some(ticket_path(100))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_gone_404_changes_nothing() {
    run(async {
        let z = FakeZendesk::start().await;
        // The ticket confirmed the stamp; its requester is gone by enrichment.
        z.ticket(100, 7, None);
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 100).await;
        assert_changed_nothing(&tr.rig.server, &call.session_id).await;
        assert_eq!(z.hits().len(), 2);
        assert_eq!(count(&tr.rig.server, |m| &m.zendesk_not_found_total), 1);
        // A ticket Zendesk does not have is not stamped at all (issue 12).
        let resp = post_webhook(
            &tr.rig,
            format!(r#"{{"ticket_id": 404, "caller_phone": "{CALLER_E164}"}}"#),
        )
        .await;
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(
            session(&tr.rig.server, &call.session_id).zendesk_ticket_id,
            Some(100)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_failing_at_confirmation_answers_503_and_stamps_nothing() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        z.script(
            &ticket_path(100),
            vec![Reply::error(401, "Couldn't authenticate you", "")],
        );
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        let body = format!(r#"{{"ticket_id": 100, "caller_phone": "{CALLER_E164}"}}"#);
        let resp = post_webhook(&tr.rig, body).await;
        assert_eq!(resp.status().as_u16(), 503, "Zendesk is told to retry");
        let s = session(&tr.rig.server, &call.session_id);
        assert_eq!((s.zendesk_ticket_id, s.contact), (None, None));
        assert_eq!(z.hits().len(), 1, "a 401 is not retried");
        assert_eq!(count(&tr.rig.server, |m| &m.zendesk_auth_failures_total), 1);
        // Zendesk's retry, once the credentials work again, stamps and enriches.
        stamp_via_webhook(&tr.rig, 100).await;
        enriched(&tr.rig.server, &call.session_id).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_plain_error_body_is_handled() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        z.set(
            &user_path(7),
            Reply::text(400, "Bad Request\r\nsomething went wrong"),
        );
        let mut tr = rig(&z, "").await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 100).await;
        assert_changed_nothing(&tr.rig.server, &call.session_id).await;
        assert_eq!(z.hits_on(&user_path(7)).len(), 1, "a 400 is not retried");
        // handoff is still serving.
        let h = reqwest::get(format!("http://{}/healthz", tr.rig.server.http_addr()))
            .await
            .expect("healthz");
        assert_eq!(h.status().as_u16(), 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_zendesk_hits_the_timeout_and_gives_up() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        z.set(
            &user_path(7),
            Reply::json(200, json!({})).delayed(Duration::from_secs(5)),
        );
        let extra = "zendesk.request_timeout_ms = 300\nzendesk.max_retries = 1\n";
        let mut tr = rig(&z, extra).await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        let start = Instant::now();
        stamp_via_webhook(&tr.rig, 100).await;
        assert_changed_nothing(&tr.rig.server, &call.session_id).await;
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "gave up after {:?}",
            start.elapsed()
        );
        assert_eq!(
            z.hits_on(&user_path(7)).len(),
            2,
            "one retry after the timeout"
        );
        assert_eq!(
            count(&tr.rig.server, |m| &m.zendesk_request_failures_total),
            1
        );
    })
    .await;
}

/// The caller phone of the n-th extra session.
fn phone(n: usize) -> String {
    format!("+1415555{:04}", 3000 + n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_token_is_refreshed_before_expiry_and_once_for_50_concurrent_enrichments() {
    run(async {
        // The first token lives 303 s: within the 300 s margin after 3 s, though
        // still valid for Zendesk. The second lives an hour.
        let z = FakeZendesk::start_oauth(vec![303, 3600], Duration::from_millis(300)).await;
        acme(&z);
        let mut tr = transfer_rig(T, &z.oauth_config()).await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 100).await;
        let first = enriched(&tr.rig.server, &call.session_id).await;
        let tokens = z.tokens();
        assert_eq!(tokens.len(), 1);
        assert!(z
            .hits()
            .iter()
            .filter(|h| h.path.starts_with("/api/"))
            .all(|h| h.authorization.as_deref() == Some("Bearer tok-1")));
        let due = tokens[0].1 + Duration::from_millis(3200);
        tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;

        // 50 sessions stamped at once, all wanting a token when the cached one is due.
        let server = &tr.rig.server;
        let mut ids = Vec::new();
        for n in 0..50 {
            let id = SessionId::new_random();
            let s = Session::new(
                id.clone(),
                "org-test".into(),
                "agent-test".into(),
                Some(phone(n)),
                None,
                "+18005550100".into(),
            );
            table(server).insert(s).expect("insert");
            z.ticket_from(1000 + n as u64, 7, Some(50), &phone(n));
            ids.push(id);
        }
        let url = webhook_url(&tr.rig);
        let client = reqwest::Client::new();
        let hooks: Vec<_> = (0..50)
            .map(|n| {
                let body = format!(
                    r#"{{"ticket_id": {}, "caller_phone": "{}", "requester_phone": ""}}"#,
                    1000 + n,
                    phone(n)
                );
                let req = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body);
                tokio::spawn(async move { req.send().await.expect("webhook").status() })
            })
            .collect();
        for h in hooks {
            assert_eq!(h.await.expect("task").as_u16(), 200);
        }
        counted(server, 51, |m| &m.enrichments_total).await;
        assert_eq!(z.tokens().len(), 2, "one refresh for all 50");
        let after = tokens[0].1 + Duration::from_millis(3200);
        let late: Vec<_> = z
            .hits()
            .into_iter()
            .filter(|h| h.path.starts_with("/api/") && h.at > after)
            .collect();
        assert!(late.len() >= 100, "{} API requests", late.len());
        assert!(late
            .iter()
            .all(|h| h.authorization.as_deref() == Some("Bearer tok-2")));
        // The same Zendesk user everywhere: one contact id.
        for id in &ids {
            assert_eq!(
                table(server).get(id).and_then(|s| s.contact_id),
                first.contact_id
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_zendesk_user_gets_the_same_contact_id_on_later_calls_and_after_a_restart() {
    run(async {
        let dir = std::env::temp_dir().join(format!("handoff-enrich-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = dir.join("contacts.db");
        let extra = format!("store.path = {:?}\n", db.display().to_string());
        let z = FakeZendesk::start().await;
        acme(&z);
        z.ticket(200, 7, Some(50));
        z.ticket(300, 7, Some(50));

        let mut tr = rig(&z, &extra).await;
        let mut call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 100).await;
        let first = enriched(&tr.rig.server, &call.session_id)
            .await
            .contact_id
            .expect("contact id");
        bye_from_caller(&mut tr.rig, &mut call).await;

        let mut call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 200).await;
        let second = enriched(&tr.rig.server, &call.session_id).await.contact_id;
        assert_eq!(second.as_deref(), Some(first.as_str()), "a later call");
        bye_from_caller(&mut tr.rig, &mut call).await;
        tr.rig.server.drain().await;
        drop(tr);

        let mut tr = rig(&z, &extra).await;
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 300).await;
        let third = enriched(&tr.rig.server, &call.session_id).await.contact_id;
        assert_eq!(third.as_deref(), Some(first.as_str()), "after a restart");
        drop(tr);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_id_set_through_the_session_api_is_kept_and_filled_in() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        z.ticket(200, 7, Some(50));
        let key = "enrich-test-api-key-0123";
        let mut tr = rig(&z, &format!("http.api_key = \"{key}\"\n")).await;
        let mut call = establish(&mut tr.rig, InviteOpts::default()).await;
        let http = reqwest::Client::new();
        let base = format!("http://{}", tr.rig.server.http_addr());
        let resp = http
            .patch(format!("{base}/v1/sessions/{}", call.session_id))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(r#"{"contact_id": "c-api-1"}"#)
            .send()
            .await
            .expect("patch");
        assert_eq!(resp.status().as_u16(), 200);
        stamp_via_webhook(&tr.rig, 100).await;
        let s = enriched(&tr.rig.server, &call.session_id).await;
        assert_eq!(
            s.contact_id.as_deref(),
            Some("c-api-1"),
            "updated, not replaced"
        );
        // The session API shows the details.
        let v: serde_json::Value = http
            .get(format!("{base}/v1/sessions/{}", call.session_id))
            .bearer_auth(key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(v["contact_id"], "c-api-1");
        assert_eq!(v["contact"]["name"], "Ada Lovelace");
        assert_eq!(v["contact"]["custom_data"]["org_plan"], "enterprise");
        bye_from_caller(&mut tr.rig, &mut call).await;
        // The Zendesk user met first under that id keeps it on the next call.
        let call = establish(&mut tr.rig, InviteOpts::default()).await;
        stamp_via_webhook(&tr.rig, 200).await;
        let s = enriched(&tr.rig.server, &call.session_id).await;
        assert_eq!(s.contact_id.as_deref(), Some("c-api-1"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_after_enrichment_carries_the_contact_id() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        let mut tr = rig(&z, "").await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 100).await;
        let contact = enriched(&tr.rig.server, &m.call.session_id)
            .await
            .contact_id
            .expect("contact id");
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        assert_eq!(
            inv.msg.header("X-OPENCX-CONTACT-ID"),
            Some(contact.as_str())
        );
        assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), Some("100"));
        tr.zendesk.respond(&inv, 486, &[], None).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        bye_from_caller(&mut tr.rig, &mut m.call).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_in_user_fields_never_reaches_a_sip_header() {
    run(async {
        let z = FakeZendesk::start().await;
        z.ticket(100, 7, Some(50));
        z.user(
            7,
            json!({
                "name": "Ada\r\nX-Evil: name",
                "external_id": "crm\r\nX-Evil: external",
                "organization_id": 50,
                "user_fields": {"note": "line one\r\nX-Evil: field"}
            }),
        );
        z.organization(50, json!({"motto": "a\r\nX-Evil: org"}));
        let mut tr = rig(&z, "").await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 100).await;
        let s = enriched(&tr.rig.server, &m.call.session_id).await;
        let c = s.contact.clone().expect("contact");
        assert_eq!(
            c.custom_data["note"],
            json!("line one\r\nX-Evil: field"),
            "kept as it is in the contact"
        );
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        let raw = String::from_utf8_lossy(&inv.msg.to_bytes()).into_owned();
        assert!(!raw.contains("X-Evil"), "{raw}");
        assert_eq!(inv.msg.header("X-Evil"), None);
        assert_eq!(
            inv.msg.header("X-OPENCX-CONTACT-ID"),
            s.contact_id.as_deref()
        );
        tr.zendesk.respond(&inv, 486, &[], None).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        bye_from_caller(&mut tr.rig, &mut m.call).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_during_a_slow_enrichment_goes_out_at_once_with_what_is_there() {
    run(async {
        let z = FakeZendesk::start().await;
        acme(&z);
        z.set(
            &user_path(7),
            Reply::json(200, json!({"user": {"id": 7}})).delayed(Duration::from_secs(6)),
        );
        let extra = "zendesk.request_timeout_ms = 8000\n";
        let mut tr = rig(&z, extra).await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 100).await;
        // The ticket has been fetched; the user is still on its way.
        let asked = eventually(LANDS, || z.hits_on(&user_path(7)).len() == 1).await;
        assert!(asked, "handoff never asked for the requester");
        let start = Instant::now();
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the REFER waited {:?}",
            start.elapsed()
        );
        assert_eq!(
            inv.msg.header("X-OPENCX-CONTACT-ID"),
            None,
            "not landed yet"
        );
        assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), Some("100"));
        assert_eq!(session(&tr.rig.server, &m.call.session_id).contact, None);
        tr.zendesk.respond(&inv, 486, &[], None).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        bye_from_caller(&mut tr.rig, &mut m.call).await;
    })
    .await;
}
