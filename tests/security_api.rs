//! Issue 12, items 5-8a, as an attacker would try them on loopback: one org's
//! session-API key reaching another org's sessions, dashboard JWTs without the
//! claims that bound them, outbound requests redirected elsewhere (credentials
//! and signed events following the redirect), and the store file's mode.

mod common;

use common::capture::Capture;
use common::http_security::{forged, live_session, metric_value, now, Api, Redirector};
use common::scenarios::{bye_from_caller, establish};
use common::{bounded, eventually, start_handoff, InviteOpts, Rig, Transport};
use handoff::config::Secret;
use handoff::metrics::Metrics;
use handoff::zendesk::{ApiAuth, ZendeskApiSettings, ZendeskClient};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const OPERATOR_KEY: &str = "operator-key-0123456789abcdef";
const KEY_A: &str = "org-a-session-api-key-0123456789abcdef";
const KEY_B: &str = "org-b-session-api-key-0123456789abcdef";
const PHONE_A: &str = "+14155550101";
const PHONE_B: &str = "+14155550202";

fn org_keys() -> String {
    format!(
        "http.api_key = \"{OPERATOR_KEY}\"\n\
         http.api_keys = [{{ org_id = \"org-a\", key = \"{KEY_A}\", name = \"crm-a\" }}, \
         {{ org_id = \"org-b\", key = \"{KEY_B}\", name = \"crm-b\" }}]\n"
    )
}

fn ids(v: &Value) -> Vec<String> {
    v["sessions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_key_cannot_read_modify_or_find_another_orgs_session() {
    bounded(LIMIT, async {
        let server = start_handoff(Transport::Udp, 9, &org_keys()).await;
        let api = Api::new(&server);
        let a = live_session(&server, "org-a", PHONE_A).await;
        let b = live_session(&server, "org-b", PHONE_B).await;
        // The same caller calling both orgs: each key finds only its own session.
        let b_same_phone = live_session(&server, "org-b", PHONE_A).await;

        // Its own org's session: readable and writable.
        let (status, v) = api.get(&format!("/v1/sessions/{a}"), KEY_A).await;
        assert_eq!((status, &v["org_id"]), (200, &json!("org-a")), "{v}");
        let (status, v) = api
            .patch(
                &format!("/v1/sessions/{a}"),
                KEY_A,
                r#"{"custom_data": {"tier": "gold"}}"#,
            )
            .await;
        assert_eq!(status, 200, "{v}");

        // Another org's session: 404, answered exactly as an id that does not exist.
        let (status, v) = api.get(&format!("/v1/sessions/{b}"), KEY_A).await;
        assert_eq!(status, 404, "org-a's key read org-b's session: {v}");
        assert_eq!(
            v,
            json!({"error": format!("no session {b}"), "field": "id"})
        );
        let (status, v) = api
            .patch(
                &format!("/v1/sessions/{b}"),
                KEY_A,
                r#"{"contact_id": "stolen", "custom_data": {"x": "y"}}"#,
            )
            .await;
        assert_eq!(status, 404, "org-a's key patched org-b's session: {v}");
        let (_, v) = api.get(&format!("/v1/sessions/{b}"), KEY_B).await;
        assert_eq!(v["contact_id"], Value::Null, "{v}");
        assert_eq!(v["custom_data"], json!({}), "{v}");

        // The phone search is scoped to the key's org.
        let (status, v) = api
            .get(
                &format!("/v1/sessions?phone={}", PHONE_B.replace('+', "%2B")),
                KEY_A,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(ids(&v), Vec::<String>::new(), "org-a found org-b's caller");
        let (_, v) = api
            .get(
                &format!("/v1/sessions?phone={}", PHONE_A.replace('+', "%2B")),
                KEY_A,
            )
            .await;
        assert_eq!(ids(&v), vec![a.clone()]);
        let (_, v) = api
            .get(
                &format!("/v1/sessions?phone={}", PHONE_A.replace('+', "%2B")),
                KEY_B,
            )
            .await;
        assert_eq!(ids(&v), vec![b_same_phone.clone()]);

        // The operator key reaches every org.
        let (status, v) = api.get(&format!("/v1/sessions/{b}"), OPERATOR_KEY).await;
        assert_eq!((status, &v["org_id"]), (200, &json!("org-b")), "{v}");
        let (_, v) = api
            .get(
                &format!("/v1/sessions?phone={}", PHONE_A.replace('+', "%2B")),
                OPERATOR_KEY,
            )
            .await;
        let mut found = ids(&v);
        found.sort();
        let mut both = vec![a.clone(), b_same_phone.clone()];
        both.sort();
        assert_eq!(found, both);

        // The two refusals are counted.
        assert_eq!(
            api.metric("handoff_session_api_cross_org_refused_total")
                .await,
            2
        );
    })
    .await;
}

const DASH_SECRET: &str = "dashboard-secret-0123456789abcdef";
const SIGNING_SECRET: &str = "signing-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_token_without_exp_aud_iss_or_from_the_future_is_refused() {
    bounded(LIMIT, async {
        let extra = format!(
            "http.dashboard_jwt_secret = \"{DASH_SECRET}\"\n\
             http.dashboard_jwt_issuer = \"opencx-dashboard\"\n\
             http.dashboard_jwt_audience = \"handoff\"\n\
             http.signing_keys = [{{ kid = \"k1\", secret = \"{SIGNING_SECRET}\", issuer = \"handoff-test\" }}]\n"
        );
        let server = start_handoff(Transport::Udp, 9, &extra).await;
        let api = Api::new(&server);
        let t = now();
        let good = json!({"iss": "opencx-dashboard", "aud": "handoff", "org_id": "org-a", "iat": t, "exp": t + 300});
        let with = |change: Value| {
            let mut c = good.clone();
            for (k, v) in change.as_object().expect("object") {
                if v.is_null() {
                    c.as_object_mut().expect("object").remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            forged(json!({"alg": "HS256", "typ": "JWT"}), c, DASH_SECRET)
        };
        let path = "/backend/zendesk-v2/voice-prefetch-url";
        let (status, v) = api.get(path, &with(json!({}))).await;
        assert_eq!(status, 200, "a good token: {v}");
        assert!(v["webhookUrl"].as_str().is_some(), "{v}");
        for (what, change) in [
            ("no exp", json!({"exp": null})),
            ("no aud", json!({"aud": null})),
            ("no iss", json!({"iss": null})),
            ("another aud", json!({"aud": "someone-else"})),
            ("another iss", json!({"iss": "someone-else"})),
            ("nbf in the future", json!({"nbf": t + 600})),
            ("iat in the future", json!({"iat": t + 600})),
            ("expired", json!({"exp": t - 600})),
        ] {
            let (status, v) = api.get(path, &with(change)).await;
            assert_eq!(status, 401, "{what}: {v}");
            assert_eq!(v["field"], "authorization", "{what}: {v}");
        }
        // Still refused: another algorithm, a wrong key.
        let none = forged(json!({"alg": "none"}), good.clone(), DASH_SECRET);
        let other_key = forged(json!({"alg": "HS256"}), good.clone(), "another-secret-0123456789");
        for token in [none, other_key] {
            let (status, v) = api.get(path, &token).await;
            assert_eq!(status, 401, "{v}");
        }
        assert_eq!(api.metric("handoff_dashboard_tokens_refused_total").await, 10);
    })
    .await;
}

fn zendesk_settings(base_url: String, auth: ApiAuth) -> ZendeskApiSettings {
    ZendeskApiSettings {
        base_url,
        auth,
        request_timeout: Duration::from_secs(2),
        max_retries: 2,
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_api_redirect_is_not_followed_and_credentials_stay_put() {
    bounded(LIMIT, async {
        let elsewhere = Capture::start().await;
        let zendesk = Redirector::start(302, &elsewhere.url()).await;
        let metrics = Arc::new(Metrics::default());
        let client = ZendeskClient::new(
            zendesk_settings(
                zendesk.base(),
                ApiAuth::ApiToken {
                    email: "agent@example.com".into(),
                    token: Secret::new("zendesk-api-token-secret"),
                },
            ),
            metrics.clone(),
        )
        .expect("client");
        let e = client
            .ticket(42)
            .await
            .expect_err("a redirect is no ticket");
        assert!(
            e.to_string().contains("302"),
            "the error names the status: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            elsewhere.requests().is_empty(),
            "the redirect was followed: {:?}",
            elsewhere.requests()
        );
        // Asked once, with its credentials, and not again (a redirect is not retried).
        let hits = zendesk.hits();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].path, "/api/v2/tickets/42.json");
        assert!(hits[0].authorization.is_some());
        let text = metrics.render_prometheus();
        assert_eq!(
            metric_value(&text, "handoff_outbound_redirects_refused_total"),
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_token_redirect_does_not_resend_the_client_secret() {
    bounded(LIMIT, async {
        const CLIENT_SECRET: &str = "oauth-client-secret-never-to-leak";
        let elsewhere = Capture::start().await;
        // 307 keeps the method and the body: followed, it would POST the secret on.
        let token_endpoint = Redirector::start(307, &elsewhere.url()).await;
        let metrics = Arc::new(Metrics::default());
        let client = ZendeskClient::new(
            zendesk_settings(
                "http://127.0.0.1:9".into(),
                ApiAuth::ClientCredentials {
                    client_id: "handoff".into(),
                    client_secret: Secret::new(CLIENT_SECRET),
                    token_url: format!("{}/oauth/tokens", token_endpoint.base()),
                    scope: "read".into(),
                    margin: Duration::from_secs(60),
                },
            ),
            metrics.clone(),
        )
        .expect("client");
        let e = client.ticket(42).await.expect_err("no token, no ticket");
        assert!(
            e.to_string().contains("307"),
            "the error names the status: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let leaked: Vec<String> = elsewhere
            .requests()
            .iter()
            .map(|c| String::from_utf8_lossy(&c.body).into_owned())
            .collect();
        assert!(
            leaked.is_empty(),
            "the token request was re-sent: {leaked:?}"
        );
        let hits = token_endpoint.hits();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert!(String::from_utf8_lossy(&hits[0].body).contains(CLIENT_SECRET));
        let text = metrics.render_prometheus();
        assert_eq!(
            metric_value(&text, "handoff_outbound_redirects_refused_total"),
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_subscriber_redirect_is_not_followed() {
    bounded(LIMIT, async {
        let elsewhere = Capture::start().await;
        let subscriber = Redirector::start(307, &elsewhere.url()).await;
        let extra = format!(
            "webhooks = [{{ url = \"{}/hooks\", secret = \"events-secret-0123456789\", events = [\"phone_call.started\"] }}]\n\
             events.retry_base_ms = 20\nevents.retry_max_ms = 50\n",
            subscriber.base()
        );
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let mut call = establish(&mut rig, InviteOpts::default()).await;
        assert!(
            eventually(Duration::from_secs(10), || !subscriber.hits().is_empty()).await,
            "phone_call.started never reached the subscriber"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            elsewhere.requests().is_empty(),
            "the signed event followed the redirect: {:?}",
            elsewhere.requests()
        );
        // Sent once, given up: a redirect is not retried either.
        assert_eq!(subscriber.hits().len(), 1, "{:?}", subscriber.hits());
        let text = rig.server.metrics().render_prometheus();
        assert_eq!(metric_value(&text, "handoff_outbound_redirects_refused_total"), 1);
        bye_from_caller(&mut rig, &mut call).await;
    })
    .await;
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("handoff-{tag}-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_file_and_its_side_files_are_0600() {
    bounded(LIMIT, async {
        // A new store.
        let dir = temp_dir("store-mode");
        let path = dir.join("handoff.db");
        let extra = format!("store.path = \"{}\"\n", path.display());
        let server = start_handoff(Transport::Udp, 9, &extra).await;
        assert_eq!(mode(&path), 0o600, "new store file");
        let wal = dir.join("handoff.db-wal");
        assert!(wal.exists(), "WAL mode makes a -wal file");
        for side in ["handoff.db-wal", "handoff.db-shm"] {
            let p = dir.join(side);
            if p.exists() {
                assert_eq!(mode(&p), 0o600, "{side}");
            }
        }
        drop(server);

        // A store left world-readable (an older handoff, a copy): tightened at start.
        let dir2 = temp_dir("store-mode-old");
        let old = dir2.join("handoff.db");
        std::fs::write(&old, b"").expect("old store");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let old_wal = dir2.join("handoff.db-wal");
        std::fs::write(&old_wal, b"").expect("old wal");
        std::fs::set_permissions(&old_wal, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let extra = format!("store.path = \"{}\"\n", old.display());
        let server = start_handoff(Transport::Udp, 9, &extra).await;
        assert_eq!(mode(&old), 0o600, "old store file");
        assert_eq!(mode(&old_wal), 0o600, "old -wal file");
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);
    })
    .await;
}

use common::cli::check_config;

#[test]
fn plain_http_outbound_off_loopback_warns_or_refuses() {
    let route = "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n";
    let hooks = |url: &str| {
        format!("[[webhooks]]\nurl = \"{url}\"\nsecret = \"events-secret-0123456789\"\n")
    };
    // Off loopback in clear: a warning naming the key, start-up allowed.
    let (code, stderr) = check_config(
        "outbound-warn",
        &format!("{}{route}", hooks("http://hooks.example.com/h")),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("webhooks[0].url"),
        "{stderr}"
    );
    // With http.require_https_outbound: refused, naming the key.
    let (code, stderr) = check_config(
        "outbound-refuse",
        &format!(
            "[http]\nrequire_https_outbound = true\n{}{route}",
            hooks("http://hooks.example.com/h")
        ),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("webhooks[0].url"), "{stderr}");
    // https://, or loopback: nothing to say.
    for url in ["https://hooks.example.com/h", "http://127.0.0.1:9/h"] {
        let (code, stderr) = check_config(
            "outbound-ok",
            &format!(
                "[http]\nrequire_https_outbound = true\n{}{route}",
                hooks(url)
            ),
        );
        assert_eq!(code, Some(0), "{url}: {stderr}");
        assert!(!stderr.contains("webhooks[0].url"), "{url}: {stderr}");
    }
}
