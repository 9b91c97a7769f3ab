//! Per-org Zendesk accounts (issue 16 item 2): `[[zendesk.accounts]]` gives each
//! listed org its own Zendesk account. Two orgs on one handoff, each with its own
//! fake Zendesk: each stamp is confirmed and enriched from its own account and the
//! other's API is never called; a webhook for one org signed with another
//! account's secret (or the default's) is refused.

mod common;

use common::scenarios::transfer::transfer_rig;
use common::scenarios::{establish, session};
use common::zendesk::{ticket_path, user_path, FakeZendesk, API_TOKEN, EMAIL};
use common::zendesk_hooks::{post_as, trigger};
use common::{bounded, eventually, InviteOpts, Transport, CALLER_E164};
use serde_json::json;
use std::time::Duration;

const T: Transport = Transport::Udp;
const CALLER_B: &str = "+14155550000";
const SECRET_A: &str = "org-a-zendesk-secret";
const SECRET_B: &str = "org-b-zendesk-secret";
const SECRET_DEFAULT: &str = "default-zendesk-secret";

/// Calls to 1000... go to org-a, the rest to org-b.
const ROUTES: &str = "\n[[route]]\nprefix = \"1000\"\norg_id = \"org-a\"\nagent_id = \"agent-a\"\nai_agent_uri = \"{ai}\"\n\
    [[route]]\ndefault = true\norg_id = \"org-b\"\nagent_id = \"agent-b\"\nai_agent_uri = \"{ai}\"\n";

fn account(org: &str, id: u64, z: Option<&FakeZendesk>, secret: Option<&str>) -> String {
    let mut s = format!("\n[[zendesk.accounts]]\norg_id = \"{org}\"\naccount_id = {id}\n");
    if let Some(z) = z {
        s.push_str(&format!(
            "base_url = \"{}\"\nemail = \"{EMAIL}\"\napi_token = \"{API_TOKEN}\"\n",
            z.base_url()
        ));
    }
    if let Some(secret) = secret {
        s.push_str(&format!("webhook_signing_secret = \"{secret}\"\n"));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orgs_enrich_each_from_their_own_zendesk_account() {
    bounded(Duration::from_secs(40), async {
        let za = FakeZendesk::start().await;
        let zb = FakeZendesk::start().await;
        za.ticket(100, 7, None);
        za.user(7, json!({"name": "Ada of A"}));
        zb.ticket_from(200, 8, None, CALLER_B);
        zb.user(8, json!({"name": "Bob of B", "phone": CALLER_B}));
        let extra = format!(
            "zendesk.request_timeout_ms = 2000\n{}{}{ROUTES}",
            account("org-a", 111, Some(&za), None),
            account("org-b", 222, Some(&zb), None)
        );
        let mut tr = transfer_rig(T, &extra).await;
        let a = establish(
            &mut tr.rig,
            InviteOpts {
                to_user: "10001234".into(),
                ..Default::default()
            },
        )
        .await;
        let b = establish(
            &mut tr.rig,
            InviteOpts {
                from: format!("<sip:{CALLER_B}@carrier.example>"),
                to_user: "20001234".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(session(&tr.rig.server, &a.session_id).org_id, "org-a");
        assert_eq!(session(&tr.rig.server, &b.session_id).org_id, "org-b");
        let (st, v) = post_as(&tr.rig, "org-a", &trigger(100, CALLER_E164), None, &[]).await;
        assert_eq!((st, &v["success"]), (200, &json!(true)), "{v}");
        let (st, v) = post_as(&tr.rig, "org-b", &trigger(200, CALLER_B), None, &[]).await;
        assert_eq!((st, &v["success"]), (200, &json!(true)), "{v}");
        let name = |id: &str| {
            session(&tr.rig.server, id)
                .contact
                .and_then(|c| c.name)
                .unwrap_or_default()
        };
        let landed = eventually(Duration::from_secs(10), || {
            name(&a.session_id) == "Ada of A" && name(&b.session_id) == "Bob of B"
        })
        .await;
        assert!(
            landed,
            "a: {:?}, b: {:?}",
            name(&a.session_id),
            name(&b.session_id)
        );
        let paths = |z: &FakeZendesk| z.hits().into_iter().map(|h| h.path).collect::<Vec<_>>();
        assert_eq!(paths(&za), [ticket_path(100), user_path(7)]);
        assert_eq!(paths(&zb), [ticket_path(200), user_path(8)]);
        // org-b's ticket 200 in org-a's account is never asked for, nor the reverse:
        // a trigger naming the other org's ticket is confirmed against its own.
        let (_, v) = post_as(&tr.rig, "org-b", &trigger(100, CALLER_B), None, &[]).await;
        assert_eq!(v["success"], false, "{v}");
        assert!(
            za.hits_on(&ticket_path(100)).len() == 1,
            "org-a's API not called for org-b"
        );
        assert_eq!(
            zb.hits_on(&ticket_path(100)).len(),
            1,
            "asked of org-b's own account"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_for_one_org_signed_with_another_accounts_secret_is_refused() {
    bounded(Duration::from_secs(30), async {
        let extra = format!(
            "zendesk.webhook_signing_secret = \"{SECRET_DEFAULT}\"\n{}{}{ROUTES}",
            account("org-a", 111, None, Some(SECRET_A)),
            account("org-b", 222, None, Some(SECRET_B))
        );
        let tr = transfer_rig(T, &extra).await;
        let body = trigger(1, CALLER_B);
        for (secret, why) in [
            (SECRET_A, "org-a's secret"),
            (SECRET_DEFAULT, "the default account's secret"),
        ] {
            let (st, v) = post_as(&tr.rig, "org-b", &body, Some(secret), &[]).await;
            assert_eq!(st, 401, "org-b signed with {why}: {v}");
            assert_eq!(v["field"], "x-zendesk-webhook-signature", "{v}");
        }
        let (st, v) = post_as(&tr.rig, "org-b", &body, None, &[]).await;
        assert_eq!(st, 401, "unsigned: {v}");
        // Its own secret passes (no call: success false, not an auth error).
        let (st, v) = post_as(&tr.rig, "org-b", &body, Some(SECRET_B), &[]).await;
        assert_eq!((st, &v["success"]), (200, &json!(false)), "{v}");
        // An org without an entry is the default account's.
        let (st, _) = post_as(&tr.rig, "org-c", &body, Some(SECRET_A), &[]).await;
        assert_eq!(st, 401);
        let (st, v) = post_as(&tr.rig, "org-c", &body, Some(SECRET_DEFAULT), &[]).await;
        assert_eq!(st, 200, "{v}");
    })
    .await;
}
