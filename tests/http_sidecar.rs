//! The HTTP sidecar over real HTTP on loopback, against a running handoff whose
//! sessions come from real SIP calls placed by the test UAs.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::scenarios::{assert_call_gone, bye_from_caller, establish, session};
use common::{bounded, InviteOpts, Rig, Transport, CALLER_E164};
use handoff::config::{Secret, SigningKey};
use handoff::http::auth::{format_iso8601, mint_prefetch_token, zendesk_signature};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const OLD_SECRET: &str = "old-signing-secret-0123456789abcdef";
const NEW_SECRET: &str = "new-signing-secret-0123456789abcdef";
const ISSUER: &str = "handoff-test";
const API_KEY: &str = "test-api-key-0123456789";
const DASHBOARD_SECRET: &str = "test-dashboard-secret-0123456789";
const DASHBOARD_ISSUER: &str = "test-dashboard";
const DASHBOARD_AUDIENCE: &str = "handoff-test";
const ZENDESK_SECRET: &str = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";
const ORG: &str = "org-test";

fn keys_config() -> String {
    format!(
        "http.api_key = \"{API_KEY}\"\nhttp.dashboard_jwt_secret = \"{DASHBOARD_SECRET}\"\nhttp.dashboard_jwt_issuer = \"{DASHBOARD_ISSUER}\"\nhttp.dashboard_jwt_audience = \"{DASHBOARD_AUDIENCE}\"\nhttp.signing_keys = [{{ kid = \"old\", secret = \"{OLD_SECRET}\", issuer = \"{ISSUER}\" }}, {{ kid = \"new\", secret = \"{NEW_SECRET}\", issuer = \"{ISSUER}\" }}]\n"
    )
}

fn key(kid: &str, secret: &str) -> SigningKey {
    SigningKey {
        kid: kid.into(),
        secret: Secret::new(secret),
        issuer: ISSUER.into(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token_for(org: &str) -> String {
    mint_prefetch_token(&key("new", NEW_SECRET), org, now(), None).expect("mint")
}

/// A token with any header and claims, signed HS256 with `secret`.
fn forged(header: Value, claims: Value, secret: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(format!("{h}.{c}").as_bytes());
    format!(
        "{h}.{c}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// A small client for the sidecar of one server.
struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(rig: &Rig) -> Http {
        Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
            base: format!("http://{}", rig.server.http_addr()),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, String, String) {
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, ctype, resp.text().await.expect("body"))
    }

    /// Status and JSON body; every answer here must be JSON.
    async fn json(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let (status, ctype, text) = self.send(req).await;
        assert!(
            ctype.starts_with("application/json"),
            "{status} answer is {ctype:?}, not JSON: {text}"
        );
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }

    fn prefetch_url(&self, token: &str) -> String {
        format!("{}/backend/zendesk-v2/voice-prefetch/{token}", self.base)
    }

    async fn prefetch(&self, token: &str, body: &str) -> (u16, Value) {
        self.json(
            self.client
                .post(self.prefetch_url(token))
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        self.json(req).await
    }

    async fn patch(&self, path: &str, body: &str) -> (u16, Value) {
        self.json(
            self.client
                .patch(format!("{}{path}", self.base))
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }
}

fn body(ticket: &str, caller: &str, requester: &str) -> String {
    format!(
        r#"{{"ticket_id": {ticket}, "caller_phone": "{caller}", "requester_phone": "{requester}", "subject": "Call from {caller}"}}"#
    )
}

async fn run<F: Future<Output = ()>>(f: F) {
    bounded(Duration::from_secs(20), f).await;
}

fn success(v: &Value) -> bool {
    v["success"].as_bool().expect("success is a boolean")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_before_the_call_fails_then_refire_succeeds_once_live() {
    run(async {
        let mut rig = Rig::new(Transport::Udp, &keys_config()).await;
        let http = Http::new(&rig);
        let token = token_for(ORG);
        let b = body("1001", "+1 (415) 555-1212", "");
        let (status, v) = http.prefetch(&token, &b).await;
        assert_eq!(status, 200);
        assert!(!success(&v), "{v}");
        assert_eq!(
            v["message"],
            format!("no live phone session for {CALLER_E164}")
        );
        let call = establish(&mut rig, InviteOpts::default()).await;
        let (status, v) = http.prefetch(&token, &b).await;
        assert_eq!(status, 200);
        assert!(success(&v), "{v}");
        assert_eq!(v["session_id"], call.session_id.as_str());
        assert_eq!(v["ticket_id"], 1001);
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(1001)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_after_the_call_stamps_at_once_and_repeat_is_idempotent() {
    run(async {
        let mut rig = Rig::new(Transport::Udp, &keys_config()).await;
        let http = Http::new(&rig);
        let call = establish(&mut rig, InviteOpts::default()).await;
        let token = token_for(ORG);
        // Ticket id as a string of digits; the caller phone blank, the requester's used.
        let b = body(r#""2002""#, "", "4155551212");
        let (status, v) = http.prefetch(&token, &b).await;
        assert_eq!((status, success(&v)), (200, true), "{v}");
        // Answered success: the stamp is visible at once, in the table and the API.
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(2002)
        );
        let (status, s) = http
            .get(&format!("/v1/sessions/{}", call.session_id), Some(API_KEY))
            .await;
        assert_eq!(status, 200);
        assert_eq!(s["zendesk_ticket_id"], 2002);
        for _ in 0..2 {
            let (status, v) = http.prefetch(&token, &b).await;
            assert_eq!((status, success(&v)), (200, true), "{v}");
            assert_eq!(v["session_id"], call.session_id.as_str());
        }
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(2002)
        );
        let m = rig.server.metrics();
        use handoff::metrics::WebhookOutcome::*;
        assert_eq!(m.webhook.get(Stamped), 1);
        assert_eq!(m.webhook.get(AlreadyStamped), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_ticket_keeps_the_first_and_says_so() {
    run(async {
        let mut rig = Rig::new(Transport::Udp, &keys_config()).await;
        let http = Http::new(&rig);
        let call = establish(&mut rig, InviteOpts::default()).await;
        let token = token_for(ORG);
        let (_, v) = http.prefetch(&token, &body("3003", CALLER_E164, "")).await;
        assert!(success(&v), "{v}");
        let (status, v) = http.prefetch(&token, &body("3004", CALLER_E164, "")).await;
        assert_eq!((status, success(&v)), (200, false), "{v}");
        let msg = v["message"].as_str().expect("message");
        assert!(msg.contains("3003") && msg.contains("3004"), "{msg}");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(3003)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_for_other_phone_other_org_or_ended_call() {
    run(async {
        let mut rig = Rig::new(Transport::Udp, &keys_config()).await;
        let http = Http::new(&rig);
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        let (_, v) = http
            .prefetch(&token_for(ORG), &body("5", "+14155550000", ""))
            .await;
        assert!(!success(&v), "{v}");
        assert_eq!(v["message"], "no live phone session for +14155550000");
        let (_, v) = http
            .prefetch(&token_for("org-other"), &body("5", CALLER_E164, ""))
            .await;
        assert!(
            !success(&v),
            "another org's token does not see the call: {v}"
        );
        bye_from_caller(&mut rig, &mut call).await;
        assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
        let (status, v) = http
            .prefetch(&token_for(ORG), &body("5", CALLER_E164, ""))
            .await;
        assert_eq!((status, success(&v)), (200, false), "{v}");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            None
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_and_rotated_key_still_works() {
    run(async {
        let mut rig = Rig::new(Transport::Udp, &keys_config()).await;
        let http = Http::new(&rig);
        let _call = establish(&mut rig, InviteOpts::default()).await;
        let b = body("77", CALLER_E164, "");
        let claims = |extra: Value| {
            let mut c =
                json!({"iss": ISSUER, "aud": "voice-prefetch", "org_id": ORG, "iat": now()});
            if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            c
        };
        let good = token_for(ORG);
        let mut tampered = good.clone();
        // Flip the org in the claims, keep the signature.
        let parts: Vec<&str> = good.split('.').collect();
        tampered = tampered.replace(
            parts[1],
            &URL_SAFE_NO_PAD.encode(claims(json!({"org_id": "org-evil"})).to_string()),
        );
        let hs = |kid: &str| json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let cases = [
            ("tampered", tampered),
            (
                "expired",
                forged(hs("new"), claims(json!({"exp": now() - 3600})), NEW_SECRET),
            ),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"new"}"#),
                    URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
                ),
            ),
            (
                "HS512",
                forged(
                    json!({"alg": "HS512", "kid": "new"}),
                    claims(json!({})),
                    NEW_SECRET,
                ),
            ),
            (
                "wrong audience",
                forged(hs("new"), claims(json!({"aud": "dashboard"})), NEW_SECRET),
            ),
            (
                "unknown kid",
                forged(hs("gone"), claims(json!({})), NEW_SECRET),
            ),
            ("garbage", "not-a-jwt".to_owned()),
        ];
        for (what, token) in cases {
            let (status, v) = http.prefetch(&token, &b).await;
            assert_eq!(status, 401, "{what}: {v}");
            assert_eq!(v["field"], "token", "{what}: {v}");
            assert!(v["error"].is_string(), "{what}: {v}");
        }
        // A URL minted with the older key still works while the key is configured.
        let old = mint_prefetch_token(&key("old", OLD_SECRET), ORG, now(), None).unwrap();
        let (status, v) = http.prefetch(&old, &b).await;
        assert_eq!((status, success(&v)), (200, true), "{v}");
        assert_eq!(
            rig.server
                .metrics()
                .webhook
                .get(handoff::metrics::WebhookOutcome::Unauthorized),
            7
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_signature_good_bad_and_stale() {
    run(async {
        let extra = format!(
            "{}zendesk.webhook_signing_secret = \"{ZENDESK_SECRET}\"\n",
            keys_config()
        );
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let http = Http::new(&rig);
        let call = establish(&mut rig, InviteOpts::default()).await;
        let token = token_for(ORG);
        let b = body("88", CALLER_E164, "");
        let post = |ts: String, sig: Option<String>| {
            let mut req = http
                .client
                .post(http.prefetch_url(&token))
                .header("content-type", "application/json")
                .header("x-zendesk-webhook-signature-timestamp", ts)
                .body(b.clone());
            if let Some(s) = sig {
                req = req.header("x-zendesk-webhook-signature", s);
            }
            http.json(req)
        };
        let fresh = format_iso8601(now() as i64);
        let (status, v) = post(fresh.clone(), Some("AAAA".into())).await;
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["field"], "x-zendesk-webhook-signature");
        let (status, _) = post(fresh.clone(), None).await;
        assert_eq!(status, 401);
        let stale = format_iso8601(now() as i64 - 600);
        let sig = zendesk_signature(ZENDESK_SECRET, &stale, b.as_bytes());
        let (status, v) = post(stale, Some(sig)).await;
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["field"], "x-zendesk-webhook-signature-timestamp");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            None
        );
        let sig = zendesk_signature(ZENDESK_SECRET, &fresh, b.as_bytes());
        let (status, v) = post(fresh, Some(sig)).await;
        assert_eq!((status, success(&v)), (200, true), "{v}");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(88)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_json_errors_naming_the_field() {
    run(async {
        let mut rig = Rig::new(Transport::Udp, &keys_config()).await;
        let http = Http::new(&rig);
        let call = establish(&mut rig, InviteOpts::default()).await;
        let token = token_for(ORG);
        for (ticket, what) in [
            (r#""12\r\n34""#, "CR/LF"),
            (r#""12abc""#, "letters"),
            ("-12", "negative"),
            ("99999999999999999999999", "overflow"),
        ] {
            let (status, v) = http.prefetch(&token, &body(ticket, CALLER_E164, "")).await;
            assert_eq!(status, 400, "{what}: {v}");
            assert_eq!(v["field"], "ticket_id", "{what}: {v}");
        }
        let (status, v) = http.prefetch(&token, &body("1", "", " ")).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["field"], "caller_phone");
        assert!(v["error"].as_str().unwrap().contains("requester_phone"));
        let big = format!(
            r#"{{"ticket_id": 1, "caller_phone": "{CALLER_E164}", "subject": "{}"}}"#,
            "x".repeat(129 * 1024)
        );
        let (status, v) = http.prefetch(&token, &big).await;
        assert_eq!(status, 413, "{v}");
        assert_eq!(v["field"], "body");
        let (status, v) = http
            .json(
                http.client
                    .post(http.prefetch_url(&token))
                    .header("content-type", "text/plain")
                    .body(body("1", CALLER_E164, "")),
            )
            .await;
        assert_eq!(status, 415, "{v}");
        assert_eq!(v["field"], "content-type");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            None,
            "no refused body stamped anything"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_url_endpoint_needs_a_good_dashboard_jwt() {
    run(async {
        let mut rig = Rig::new(Transport::Udp, &keys_config()).await;
        let http = Http::new(&rig);
        let path = "/backend/zendesk-v2/voice-prefetch-url";
        let dashboard = forged(
            json!({"alg": "HS256", "typ": "JWT"}),
            json!({"org_id": ORG, "exp": now() + 600, "iss": DASHBOARD_ISSUER, "aud": DASHBOARD_AUDIENCE}),
            DASHBOARD_SECRET,
        );
        let (status, v) = http.get(path, Some(&dashboard)).await;
        assert_eq!(status, 200, "{v}");
        let url = v["webhookUrl"].as_str().expect("webhookUrl").to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:8080/backend/zendesk-v2/voice-prefetch/"),
            "{url}"
        );
        // The token in it works on this server.
        let call = establish(&mut rig, InviteOpts::default()).await;
        let token = url.rsplit('/').next().unwrap();
        let (_, v) = http.prefetch(token, &body("9", CALLER_E164, "")).await;
        assert!(success(&v), "{v}");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(9)
        );
        let wrong = forged(
            json!({"alg": "HS256"}),
            json!({"org_id": ORG}),
            "not-the-dashboard-secret-000",
        );
        for bearer in [Some(wrong.as_str()), Some("junk"), None] {
            let (status, v) = http.get(path, bearer).await;
            assert_eq!(status, 401, "{bearer:?}: {v}");
            assert_eq!(v["field"], "authorization");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_api_get_find_patch_and_auth() {
    run(async {
        let mut rig = Rig::new(Transport::Udp, &keys_config()).await;
        let http = Http::new(&rig);
        let call = establish(&mut rig, InviteOpts::default()).await;
        let path = format!("/v1/sessions/{}", call.session_id);
        let (status, s) = http.get(&path, Some(API_KEY)).await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(s["caller_phone"], CALLER_E164);
        assert_eq!(s["org_id"], ORG);
        assert_eq!(s["agent_id"], "agent-test");
        assert_eq!(s["state"], "answered");
        assert_eq!(s["zendesk_ticket_id"], Value::Null);
        assert_eq!(s["legs"].as_array().map(Vec::len), Some(2));

        let (status, found) = http
            .get("/v1/sessions?phone=%2B1%20415%20555%201212", Some(API_KEY))
            .await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["sessions"][0]["id"], call.session_id.as_str());
        let (status, v) = http.get("/v1/sessions?phone=abc", Some(API_KEY)).await;
        assert_eq!((status, &v["field"]), (400, &json!("phone")));

        let (status, s) = http
            .patch(
                &path,
                r#"{"contact_id": "contact-7", "custom_data": {"tier": "gold"}}"#,
            )
            .await;
        assert_eq!(status, 200, "{s}");
        let (_, s) = http
            .patch(&path, r#"{"custom_data": {"lang": "en"}}"#)
            .await;
        assert_eq!(s["contact_id"], "contact-7");
        assert_eq!(s["custom_data"], json!({"tier": "gold", "lang": "en"}));
        let stored = session(&rig.server, &call.session_id);
        assert_eq!(stored.contact_id.as_deref(), Some("contact-7"));
        assert_eq!(
            stored.custom_data.get("lang").map(String::as_str),
            Some("en")
        );

        let (status, v) = http
            .patch(&path, r#"{"contact_id": "c\r\nX-OPENCX-TRANSFER: true"}"#)
            .await;
        assert_eq!((status, &v["field"]), (400, &json!("contact_id")));
        let (status, v) = http.patch(&path, r#"{"custom_data": {"k": "a\nb"}}"#).await;
        assert_eq!((status, &v["field"]), (400, &json!("custom_data")));
        assert_eq!(
            session(&rig.server, &call.session_id).contact_id.as_deref(),
            Some("contact-7")
        );

        let (status, v) = http.get(&path, None).await;
        assert_eq!((status, &v["field"]), (401, &json!("authorization")));
        let (status, _) = http.get(&path, Some("wrong-key-0123456789")).await;
        assert_eq!(status, 401);
        let (status, _) = http.get("/v1/sessions/nosuchsession", Some(API_KEY)).await;
        assert_eq!(status, 404);
        let (status, v) = http.get("/v1/sessions/bad%0Did", Some(API_KEY)).await;
        assert_eq!((status, &v["field"]), (400, &json!("id")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_webhook_is_503_and_the_session_api_404() {
    run(async {
        let rig = Rig::new(Transport::Udp, "").await;
        let http = Http::new(&rig);
        let (status, v) = http
            .prefetch(&token_for(ORG), &body("1", CALLER_E164, ""))
            .await;
        assert_eq!(status, 503, "{v}");
        assert!(v["error"].as_str().unwrap().contains("signing key"));
        let (status, _) = http
            .get("/v1/sessions?phone=4155551212", Some(API_KEY))
            .await;
        assert_eq!(status, 404);
        let (status, _) = http
            .get("/backend/zendesk-v2/voice-prefetch-url", Some("x"))
            .await;
        assert_eq!(status, 503);
        let (status, v) = http.get("/no/such/path", None).await;
        assert_eq!(status, 404, "{v}");
        let (status, v) = http
            .json(http.client.delete(format!("{}/healthz", http.base)))
            .await;
        assert_eq!(status, 405, "{v}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_parse_as_prometheus_text() {
    run(async {
        let mut rig = Rig::new(Transport::Udp, &keys_config()).await;
        let http = Http::new(&rig);
        let (status, v) = http.get("/healthz", None).await;
        assert_eq!((status, &v["status"]), (200, &json!("ok")));
        let (status, v) = http.get("/readyz", None).await;
        assert_eq!((status, &v["ready"]), (200, &json!(true)));
        let _call = establish(&mut rig, InviteOpts::default()).await;
        http.prefetch(&token_for(ORG), &body("1", CALLER_E164, ""))
            .await;
        let (status, ctype, text) = http
            .send(http.client.get(format!("{}/metrics", http.base)))
            .await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/plain"), "{ctype}");
        let mut values = std::collections::HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not `name value`: {line:?}"));
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("value not a number: {line:?}"));
            let metric = match name.split_once('{') {
                Some((m, labels)) => {
                    assert!(labels.ends_with('}'), "labels not closed: {line:?}");
                    for pair in labels.trim_end_matches('}').split(',') {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("label not k=v: {line:?}"));
                        assert!(!k.is_empty() && v.starts_with('"') && v.ends_with('"'));
                    }
                    m
                }
                None => name,
            };
            assert!(
                !metric.is_empty()
                    && metric
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
                "bad metric name: {line:?}"
            );
            values.insert(name.to_owned(), value.to_owned());
        }
        assert_eq!(values["handoff_calls_active"], "1");
        assert_eq!(
            values["handoff_webhook_requests_total{outcome=\"stamped\"}"],
            "1"
        );
        assert_eq!(values["handoff_sessions{state=\"live\"}"], "1");
        // SIP by method and status: the call's INVITE came in, its 200 went out
        // (retransmissions over UDP may add to the responses).
        let at_least_one = |key: &str| {
            let v: f64 = values[key].parse().expect("number");
            assert!(v >= 1.0, "{key} = {v}");
        };
        at_least_one("handoff_sip_requests_total{direction=\"in\",method=\"INVITE\"}");
        at_least_one(
            "handoff_sip_responses_total{direction=\"out\",method=\"INVITE\",status=\"200\"}",
        );
        at_least_one(
            "handoff_sip_responses_total{direction=\"in\",method=\"INVITE\",status=\"200\"}",
        );
        assert_eq!(values["handoff_media_relays_active"], "1");
        assert!(values.contains_key("handoff_transfers_succeeded_total"));
        assert!(values.contains_key("handoff_transfer_setup_seconds_count"));
    })
    .await;
}
