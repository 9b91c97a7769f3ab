//! Issue 12, item 4: the webhook and its tokens as an attacker meets them. Each
//! test is one attack from the review, run against the real binary or a running
//! handoff on loopback: the shipped key off loopback, an unsigned webhook off
//! loopback, an expired or revoked token, a replayed signature, a stamp for a
//! ticket of another caller, and duplicate JSON keys.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::scenarios::{count, establish, session};
use common::zendesk::{ticket_path, user_path, FakeZendesk, Reply};
use common::{bounded, InviteOpts, Rig, Transport, CALLER_E164};
use handoff::http::auth::{format_iso8601, zendesk_signature};
use handoff::metrics::WebhookOutcome;
use serde_json::{json, Value};
use std::future::Future;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::cli::{temp_config, BIN, ROUTE};
const SHIPPED: &str = include_str!("../config.toml");
const SIGNING_SECRET: &str = "security-test-signing-secret-0123";
const ZENDESK_SECRET: &str = "security-test-zendesk-secret-0123";
const ORG: &str = "org-test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn run<F: Future<Output = ()>>(f: F) {
    bounded(Duration::from_secs(30), f).await;
}

fn signing_key() -> String {
    format!(
        "http.signing_keys = [{{ kid = \"k1\", secret = \"{SIGNING_SECRET}\", issuer = \"t\" }}]\n"
    )
}

/// `check-config` and `run` on `text`: both exit 2 with one line naming every
/// needle (the run never gets to listen).
fn assert_refused(name: &str, text: &str, needles: &[&str]) {
    let path = temp_config(name, text);
    for args in [
        vec!["check-config", path.to_str().expect("path")],
        vec!["run", "--config", path.to_str().expect("path")],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run handoff");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{args:?}: {stderr:?} should name {n:?}");
        }
    }
}

fn check_config_ok(name: &str, text: &str) {
    let (code, stderr) = common::cli::check_config(name, text);
    assert_eq!(code, Some(0), "{stderr}");
}

/// The shipped config.toml with the sidecar listening on every address.
fn shipped_on_all_addresses() -> String {
    let text = SHIPPED.replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"");
    assert_ne!(text, SHIPPED, "the shipped [http] listen line moved");
    text
}

#[test]
fn dev_signing_key_off_loopback_refuses_to_start_naming_the_key() {
    // The shipped file as it is, but reachable: its key is public.
    assert_refused(
        "dev-key",
        &shipped_on_all_addresses(),
        &["http.signing_keys[0].secret", "0.0.0.0:8080"],
    );
    // The commented examples are public too, once uncommented.
    let own =
        "[http]\nlisten = \"0.0.0.0:8080\"\napi_key = \"change-me-to-a-long-random-string\"\n";
    assert_refused(
        "example-api-key",
        &format!("{own}{ROUTE}"),
        &["http.api_key"],
    );
    let own = "[http]\nlisten = \"[::]:8080\"\ndashboard_jwt_secret = \"change-me-to-a-long-random-string\"\n";
    assert_refused(
        "example-dashboard",
        &format!("{own}{ROUTE}"),
        &["http.dashboard_jwt_secret"],
    );
    // On loopback the shipped file runs as it is.
    check_config_ok("shipped", SHIPPED);
}

#[test]
fn unsigned_webhooks_off_loopback_refuse_to_start_unless_allowed() {
    let own = format!(
        "[http]\nlisten = \"0.0.0.0:8080\"\n[[http.signing_keys]]\nkid = \"k1\"\nsecret = \"{SIGNING_SECRET}\"\nissuer = \"t\"\n"
    );
    assert_refused(
        "unsigned",
        &format!("{own}{ROUTE}"),
        &[
            "zendesk.webhook_signing_secret",
            "zendesk.allow_unsigned_webhooks",
        ],
    );
    check_config_ok(
        "unsigned-allowed",
        &format!("{own}[zendesk]\nallow_unsigned_webhooks = true\n{ROUTE}"),
    );
    check_config_ok(
        "signed",
        &format!("{own}[zendesk]\nwebhook_signing_secret = \"{ZENDESK_SECRET}\"\n{ROUTE}"),
    );
}

/// The token of the webhook URL handoff hands out (as `handoff webhook-url` and
/// the dashboard endpoint make it) for `org`, as if minted at `at`, with the
/// settings of `extra`.
fn mint(extra: &str, org: &str, at: u64) -> String {
    let text = common::config_text(Transport::Udp, 5080, extra);
    let settings = handoff::config::Config::parse(&text, "test").expect("config");
    let url = handoff::http::webhook_url(&settings.http, org, at).expect("url");
    url.rsplit('/').next().expect("token").to_owned()
}

/// The rig's webhook URL with `token`.
fn url_of(rig: &Rig, token: &str) -> String {
    format!(
        "http://{}/backend/zendesk-v2/voice-prefetch/{token}",
        rig.server.http_addr()
    )
}

fn minted_url(rig: &Rig, extra: &str, org: &str, at: u64) -> String {
    url_of(rig, &mint(extra, org, at))
}

fn claims_of(url: &str) -> Value {
    let token = url.rsplit('/').next().expect("token");
    let part = token.split('.').nth(1).expect("claims");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

fn body(ticket: u64, caller: &str) -> String {
    format!(r#"{{"ticket_id": {ticket}, "caller_phone": "{caller}", "requester_phone": ""}}"#)
}

async fn post(url: &str, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("webhook");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_past_its_default_exp_is_refused() {
    run(async {
        let keys = signing_key();
        let mut rig = Rig::new(Transport::Udp, &keys).await;
        let call = establish(&mut rig, InviteOpts::default()).await;
        // Minted with the default lifetime 366 days ago: no longer valid.
        let old = minted_url(&rig, &keys, ORG, now() - 366 * 86_400);
        let claims = claims_of(&old);
        assert!(claims["exp"].is_u64(), "new tokens carry exp: {claims}");
        assert!(claims["jti"].is_string(), "and a jti: {claims}");
        let (status, v) = post(&old, &body(10, CALLER_E164), &[]).await;
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["field"], "token");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("expired")),
            "{v}"
        );
        assert_eq!(count(&rig.server, |m| &m.webhook_tokens_expired_total), 1);
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            None
        );
        // One minted now works.
        let fresh = minted_url(&rig, &keys, ORG, now());
        let (status, v) = post(&fresh, &body(10, CALLER_E164), &[]).await;
        assert_eq!((status, v["success"].as_bool()), (200, Some(true)), "{v}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_by_jti_and_by_issued_before_are_refused() {
    run(async {
        let keys = signing_key();
        // Mint first, then revoke in the config.
        let by_jti = mint(&keys, ORG, now());
        let jti = claims_of(&by_jti)["jti"].as_str().expect("jti").to_owned();
        let kept = mint(&keys, ORG, now());
        let older = mint(&keys, ORG, now() - 7200);
        let cutoff = format_iso8601(now() as i64 - 3600);
        let extra = format!(
            "{keys}http.revoked_tokens = [{{ org_id = \"{ORG}\", jti = \"{jti}\" }}, {{ org_id = \"{ORG}\", issued_before = \"{cutoff}\" }}, {{ org_id = \"org-other\", issued_before = \"2100-01-01T00:00:00Z\" }}]\n"
        );
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let call = establish(&mut rig, InviteOpts::default()).await;
        for token in [&by_jti, &older] {
            let (status, v) = post(&url_of(&rig, token), &body(20, CALLER_E164), &[]).await;
            assert_eq!(status, 401, "{v}");
            assert!(v["error"].as_str().is_some_and(|e| e.contains("revoked")), "{v}");
        }
        assert_eq!(count(&rig.server, |m| &m.webhook_tokens_revoked_total), 2);
        assert_eq!(session(&rig.server, &call.session_id).zendesk_ticket_id, None);
        // Another token of the org, issued after the cutoff, still works.
        let (status, v) = post(&url_of(&rig, &kept), &body(20, CALLER_E164), &[]).await;
        assert_eq!((status, v["success"].as_bool()), (200, Some(true)), "{v}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_zendesk_signature_is_refused() {
    run(async {
        let extra = format!(
            "{}zendesk.webhook_signing_secret = \"{ZENDESK_SECRET}\"\n",
            signing_key()
        );
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let url = minted_url(&rig, &extra, ORG, now());
        // Signed for another caller's phone: no session, nothing stamped, but
        // the signature is used up all the same.
        let other = body(30, "+14155550000");
        let ts = format_iso8601(now() as i64);
        let signed = |b: &str| {
            vec![
                ("x-zendesk-webhook-signature-timestamp", ts.clone()),
                (
                    "x-zendesk-webhook-signature",
                    zendesk_signature(ZENDESK_SECRET, &ts, b.as_bytes()),
                ),
            ]
        };
        let (status, v) = post(&url, &other, &signed(&other)).await;
        assert_eq!((status, v["success"].as_bool()), (200, Some(false)), "{v}");
        let call = establish(&mut rig, InviteOpts::default()).await;
        let mine = body(31, CALLER_E164);
        let (status, v) = post(&url, &mine, &signed(&mine)).await;
        assert_eq!((status, v["success"].as_bool()), (200, Some(true)), "{v}");
        // The same request again, captured and replayed within the window.
        for b in [&mine, &other] {
            let (status, v) = post(&url, b, &signed(b)).await;
            assert_eq!(status, 401, "{v}");
            assert_eq!(v["field"], "x-zendesk-webhook-signature");
            assert!(
                v["error"].as_str().is_some_and(|e| e.contains("replay")),
                "{v}"
            );
        }
        assert_eq!(count(&rig.server, |m| &m.webhook_replays_refused_total), 2);
        assert_eq!(
            rig.server
                .metrics()
                .webhook
                .get(WebhookOutcome::BadSignature),
            2
        );
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(31)
        );
    })
    .await;
}

/// A phone-call ticket whose channel says `via_phone` called, by user 70.
fn ticket_from(z: &FakeZendesk, id: u64, via_phone: &str) {
    z.set(
        &ticket_path(id),
        Reply::json(
            200,
            json!({"ticket": {
                "id": id, "requester_id": 70, "organization_id": null, "subject": "Call",
                "via": {"channel": "voice_inbound", "source": {"from": {"phone": via_phone}, "to": {}, "rel": "inbound"}}
            }}),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamp_for_a_ticket_of_another_phone_is_refused_and_nothing_changes() {
    run(async {
        let z = FakeZendesk::start().await;
        // The attacker's ticket: called from and requested by someone else.
        ticket_from(&z, 500, "+1 (212) 555-0100");
        z.user(70, json!({"name": "Mallory", "phone": "+12125550100"}));
        let extra = format!("{}{}", signing_key(), z.config());
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let call = establish(&mut rig, InviteOpts::default()).await;
        let url = minted_url(&rig, &extra, ORG, now());
        // A phone with no live call: answered at once, Zendesk not asked.
        let (status, v) = post(&url, &body(500, "+14155550000"), &[]).await;
        assert_eq!((status, v["success"].as_bool()), (200, Some(false)), "{v}");
        assert!(z.hits().is_empty(), "{:?}", z.hits());
        let (status, v) = post(&url, &body(500, CALLER_E164), &[]).await;
        assert_eq!((status, v["success"].as_bool()), (200, Some(false)), "{v}");
        let msg = v["message"].as_str().expect("message");
        assert!(msg.contains("500") && msg.contains("requester"), "{msg}");
        assert!(
            !msg.contains("2125550100"),
            "the ticket's phone is not told: {msg}"
        );
        let s = session(&rig.server, &call.session_id);
        assert_eq!(s.zendesk_ticket_id, None, "not stamped");
        assert_eq!(s.contact, None, "nothing enriched");
        assert_eq!(
            count(&rig.server, |m| &m.webhook_stamps_unconfirmed_total),
            1
        );
        assert_eq!(
            rig.server
                .metrics()
                .webhook
                .get(WebhookOutcome::Unconfirmed),
            1
        );
        assert_eq!(count(&rig.server, |m| &m.enrichments_total), 0);
        // A ticket Zendesk does not have is refused the same way.
        let (status, v) = post(&url, &body(404, CALLER_E164), &[]).await;
        assert_eq!((status, v["success"].as_bool()), (200, Some(false)), "{v}");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            None
        );

        // The caller's own ticket (the channel shows no phone; the requester's
        // matches) is stamped, then enriched without fetching the ticket twice.
        ticket_from(&z, 501, "");
        z.user(70, json!({"name": "Ada", "phone": "(415) 555-1212"}));
        let (status, v) = post(&url, &body(501, CALLER_E164), &[]).await;
        assert_eq!((status, v["success"].as_bool()), (200, Some(true)), "{v}");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(501)
        );
        let enriched = common::eventually(Duration::from_secs(10), || {
            session(&rig.server, &call.session_id).contact.is_some()
        })
        .await;
        assert!(enriched, "enriched once confirmed");
        assert_eq!(z.hits_on(&ticket_path(501)).len(), 1);
        assert!(!z.hits_on(&user_path(70)).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_get_400_naming_the_key() {
    run(async {
        let keys = signing_key();
        let mut rig = Rig::new(Transport::Udp, &keys).await;
        let call = establish(&mut rig, InviteOpts::default()).await;
        let url = minted_url(&rig, &keys, ORG, now());
        // A ticket title Zendesk does not escape, crafted to name another caller
        // last (serde_json alone lets the last one win).
        let title = r#"x", "caller_phone": "+14155551212"#;
        let crafted = format!(
            r#"{{"ticket_id": 40, "caller_phone": "+14155550000", "requester_phone": "", "subject": "{title}"}}"#
        );
        let (status, v) = post(&url, &crafted, &[]).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["field"], "caller_phone");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("caller_phone")), "{v}");
        let twice = r#"{"ticket_id": 41, "ticket_id": 42, "caller_phone": "+14155551212"}"#;
        let (status, v) = post(&url, twice, &[]).await;
        assert_eq!((status, &v["field"]), (400, &json!("ticket_id")), "{v}");
        assert_eq!(session(&rig.server, &call.session_id).zendesk_ticket_id, None);
        assert_eq!(count(&rig.server, |m| &m.webhook_duplicate_keys_total), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesks_retry_after_our_503_is_not_a_replay() {
    run(async {
        let z = FakeZendesk::start().await;
        ticket_from(&z, 600, CALLER_E164);
        z.user(70, json!({"phone": CALLER_E164}));
        // Zendesk cannot be asked the first time: nothing is done, 503.
        z.script(
            &ticket_path(600),
            vec![Reply::error(401, "Couldn't authenticate you", "")],
        );
        let extra = format!(
            "{}zendesk.webhook_signing_secret = \"{ZENDESK_SECRET}\"\n{}",
            signing_key(),
            z.config()
        );
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let call = establish(&mut rig, InviteOpts::default()).await;
        let url = minted_url(&rig, &extra, ORG, now());
        let b = body(600, CALLER_E164);
        let ts = format_iso8601(now() as i64);
        let signed = vec![
            ("x-zendesk-webhook-signature-timestamp", ts.clone()),
            (
                "x-zendesk-webhook-signature",
                zendesk_signature(ZENDESK_SECRET, &ts, b.as_bytes()),
            ),
        ];
        let (status, v) = post(&url, &b, &signed).await;
        assert_eq!(status, 503, "{v}");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            None
        );
        // Zendesk retries the very same request: carried out, not a replay.
        let (status, v) = post(&url, &b, &signed).await;
        assert_eq!((status, v["success"].as_bool()), (200, Some(true)), "{v}");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(600)
        );
        // Once carried out, it is used up.
        let (status, _) = post(&url, &b, &signed).await;
        assert_eq!(status, 401);
    })
    .await;
}
