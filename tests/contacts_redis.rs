//! Shared contacts (issue 13, item 2): with `[session] store = "redis"` the
//! contact table lives in Redis, so the same Zendesk user gets the same `ct-` id
//! whichever node enriched it. Two nodes on one `redis-server`, a fake Zendesk
//! API on loopback; and the Redis contact store on its own: racing resolves,
//! garbage under a contact key, Redis stopped and back, and the start-up copy of
//! a node's SQLite contacts into Redis.
//!
//! redis-server runs as a process on a random loopback port, stopped by PID
//! (tests/common/redis.rs). Needs `redis-server`: `scripts/install-test-deps.sh`.

mod common;

use common::cluster::{fire_webhook, fresh_prefix, redis_node_with};
use common::redis::RedisServer;
use common::scenarios::media::establish_media;
use common::scenarios::transfer::{expect_notify, expect_target_invite, refer, TransferRig};
use common::scenarios::{bye_from_caller, count};
use common::zendesk::{user_path, FakeZendesk, Reply};
use common::{bounded, eventually, CALLER_E164};
use handoff::config::session::RedisSettings;
use handoff::metrics::Metrics;
use handoff::session::contacts::{copy_at_start, ContactsError};
use handoff::session::redis::contacts::RedisContacts;
use handoff::session::{ContactDetails, RedisStore, SessionId};
use handoff::store::contacts::ContactStore;
use handoff::store::Store;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Record TTL of the nodes (the session records, not the contacts: those have none).
const TTL_SECS: u64 = 30;
/// The org of the tests' default route.
const ORG: &str = "org-test";
/// Generous: the machine may be loaded.
const LANDS: Duration = Duration::from_secs(10);

async fn raw_redis(r: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(r.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// A contact store on Redis `url` under `prefix`, on a connection of its own (as
/// another node's would be), with the default 200 ms command timeout.
fn shared_contacts(url: &str, prefix: &str) -> (RedisContacts, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let settings = RedisSettings {
        url: url.to_owned(),
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_millis(200),
        record_ttl: Duration::from_secs(120),
    };
    let store = RedisStore::new(&settings, "t", 10, Duration::from_secs(1), metrics.clone())
        .expect("redis store");
    (store.contacts(), metrics)
}

fn details(name: &str) -> ContactDetails {
    ContactDetails {
        name: Some(name.into()),
        zendesk_user_id: Some(7),
        ..Default::default()
    }
}

/// The Zendesk of these tests: tickets `tickets` by user 7, no organization.
fn zendesk_with(z: &FakeZendesk, tickets: &[u64]) {
    for t in tickets {
        z.ticket(*t, 7, None);
    }
    z.user(7, json!({}));
}

async fn node(r: &RedisServer, prefix: &str, id: &str, z: &FakeZendesk) -> TransferRig {
    redis_node_with(&r.url(), prefix, id, TTL_SECS, &z.config()).await
}

/// Polls the shared session until enrichment has put a contact on it; its id.
async fn enriched_contact_id(node: &TransferRig, session: &str) -> String {
    let sid = SessionId::parse(session).expect("session id");
    let until = Instant::now() + LANDS;
    loop {
        if let Ok(Some(s)) = node.rig.server.session_store().get(&sid).await {
            if let (Some(id), Some(c)) = (&s.contact_id, &s.contact) {
                if c.zendesk_user_id == Some(7) {
                    return id.clone();
                }
            }
        }
        assert!(Instant::now() < until, "no contact enriched on {session}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until a counter of `node` reaches `n`.
async fn counted(
    node: &TransferRig,
    n: u64,
    pick: impl Fn(&Metrics) -> &std::sync::atomic::AtomicU64 + Copy,
) {
    let server = &node.rig.server;
    let reached = eventually(LANDS, || count(server, pick) >= n).await;
    assert!(reached, "counter stays at {} < {n}", count(server, pick));
}

/// REFERs the call to the node's Zendesk UA; returns the transfer INVITE's
/// contact and ticket headers; the target refuses, the caller hangs up.
async fn transfer_headers(
    tr: &mut TransferRig,
    m: &mut common::scenarios::media::MediaCall,
) -> (Option<String>, Option<String>) {
    let target = format!("<{}>", tr.target);
    let refer_msg = refer(tr, m, &target, 202).await;
    expect_notify(tr, m, &refer_msg).await;
    let inv = expect_target_invite(tr).await;
    assert!(
        inv.msg.header_count("X-OPENCX-CONTACT-ID") <= 1,
        "one contact header at most"
    );
    let contact = inv.msg.header("X-OPENCX-CONTACT-ID").map(str::to_owned);
    let ticket = inv
        .msg
        .header("X-OPENCX-ZENDESK-TICKET-ID")
        .map(str::to_owned);
    tr.zendesk.respond(&inv, 486, &[], None).await;
    let _ = expect_notify(tr, m, &refer_msg).await;
    bye_from_caller(&mut tr.rig, &mut m.call).await;
    (contact, ticket)
}

/// The same Zendesk user, enriched on node A on one call and on node B on the
/// next: one contact id, on the session and on B's transfer INVITE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_zendesk_user_enriched_on_two_nodes_gets_one_contact_id() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(40), async {
        let z = FakeZendesk::start().await;
        zendesk_with(&z, &[100, 200]);
        let prefix = fresh_prefix();
        let mut a = node(&r, &prefix, "node-a", &z).await;
        let mut b = node(&r, &prefix, "node-b", &z).await;

        let mut m = establish_media(&mut a.rig).await;
        let (status, v) = fire_webhook(&a.rig, 100).await;
        assert_eq!((status, &v["success"]), (200, &json!(true)), "{v}");
        let on_a = enriched_contact_id(&a, &m.call.session_id).await;
        assert!(on_a.starts_with("ct-"), "{on_a}");
        let (contact, _) = transfer_headers(&mut a, &mut m).await;
        assert_eq!(contact.as_deref(), Some(on_a.as_str()));

        let mut m = establish_media(&mut b.rig).await;
        let (status, v) = fire_webhook(&b.rig, 200).await;
        assert_eq!((status, &v["success"]), (200, &json!(true)), "{v}");
        let on_b = enriched_contact_id(&b, &m.call.session_id).await;
        assert_eq!(on_b, on_a, "node B gives the user node A's contact id");
        let (contact, ticket) = transfer_headers(&mut b, &mut m).await;
        assert_eq!(contact.as_deref(), Some(on_a.as_str()), "on B's transfer");
        assert_eq!(ticket.as_deref(), Some("200"));

        // In Redis: one durable record (no TTL) under the prefix.
        let mut raw = raw_redis(&r).await;
        let key = format!("{prefix}contact:{ORG}:7");
        let id: String = redis::cmd("HGET")
            .arg(&key)
            .arg("id")
            .query_async(&mut raw)
            .await
            .expect("hget");
        assert_eq!(id, on_a);
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .expect("ttl");
        assert_eq!(ttl, -1, "contacts never expire");
        assert_eq!(count(&a.rig.server, |m| &m.enrichments_total), 1);
        assert_eq!(count(&b.rig.server, |m| &m.enrichments_total), 1);
    })
    .await;
}

/// Two stores (two nodes' connections) resolving the same new user at the same
/// moment, many times over: every round, both get one id, whatever each proposed;
/// later resolves keep it and update the details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_resolving_a_new_user_at_once_agree_on_one_id() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(30), async {
        let prefix = fresh_prefix();
        let (a, _) = shared_contacts(&r.url(), &prefix);
        let (b, _) = shared_contacts(&r.url(), &prefix);
        for user in 1..=200u64 {
            // Half the rounds each side brings a preferred id of its own.
            let (pa, pb) = if user % 2 == 0 {
                (Some(format!("c-a-{user}")), Some(format!("c-b-{user}")))
            } else {
                (None, None)
            };
            let go = tokio::sync::Barrier::new(2);
            let (ia, ib) = tokio::join!(
                async {
                    go.wait().await;
                    a.resolve(ORG, user, pa.as_deref(), &details("A")).await
                },
                async {
                    go.wait().await;
                    b.resolve(ORG, user, pb.as_deref(), &details("B")).await
                }
            );
            let (ia, ib) = (ia.expect("a resolves"), ib.expect("b resolves"));
            assert_eq!(ia, ib, "user {user}: one id");
            if let (Some(pa), Some(pb)) = (&pa, &pb) {
                assert!(ia == *pa || ia == *pb, "a preferred id wins: {ia}");
            } else {
                assert!(ia.starts_with("ct-"), "{ia}");
            }
            let later = a
                .resolve(ORG, user, Some("c-late"), &details("Later"))
                .await
                .expect("later");
            assert_eq!(later, ia, "a known user keeps the id");
        }
        let got = b.get(ORG, 200).await.expect("get").expect("stored");
        assert_eq!(
            got.details.name.as_deref(),
            Some("Later"),
            "details updated"
        );
        // Another org's user 7 is another contact.
        let x = a.resolve(ORG, 7, None, &details("A")).await.expect("x");
        let y = a.resolve("org-2", 7, None, &details("A")).await.expect("y");
        assert_ne!(x, y);
    })
    .await;
}

/// Garbage under a contact's key (another type of value; a hash whose id would
/// inject a header) is an error from the store, never a panic, and never a
/// header: the enrichment fails, counted, and the transfer goes without a contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_the_contact_key_is_an_error_not_a_header() {
    let r = RedisServer::start();
    bounded(Duration::from_secs(40), async {
        let prefix = fresh_prefix();
        let mut raw = raw_redis(&r).await;
        let (s, metrics) = shared_contacts(&r.url(), &prefix);
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}contact:{ORG}:1"))
            .arg("not a hash")
            .query_async(&mut raw)
            .await
            .expect("set");
        let e = s.resolve(ORG, 1, None, &details("A")).await.unwrap_err();
        assert!(matches!(e, ContactsError::Corrupt(_)), "{e:?}");
        assert!(s.get(ORG, 1).await.is_err());
        let evil = "ct-1\r\nX-OPENCX-ZENDESK-TICKET-ID: 666";
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}contact:{ORG}:7"))
            .arg("id")
            .arg(evil)
            .arg("details")
            .arg("[not an object")
            .query_async(&mut raw)
            .await
            .expect("hset");
        let e = s.resolve(ORG, 7, None, &details("A")).await.unwrap_err();
        assert!(matches!(e, ContactsError::Corrupt(_)), "{e:?}");
        assert!(
            !e.to_string().contains("666"),
            "the value is not echoed: {e}"
        );
        assert!(matches!(
            s.get(ORG, 7).await,
            Err(ContactsError::Corrupt(_))
        ));
        assert!(metrics.contact_store_errors_total.load(Ordering::Relaxed) >= 4);

        // End to end: the node enriches user 7 and meets the planted hash.
        let z = FakeZendesk::start().await;
        zendesk_with(&z, &[100]);
        let mut a = node(&r, &prefix, "node-a", &z).await;
        let mut m = establish_media(&mut a.rig).await;
        let (status, v) = fire_webhook(&a.rig, 100).await;
        assert_eq!((status, &v["success"]), (200, &json!(true)), "{v}");
        counted(&a, 1, |m| &m.enrichments_failed_total).await;
        counted(&a, 1, |m| &m.contact_store_errors_total).await;
        assert_eq!(count(&a.rig.server, |m| &m.enrichments_total), 0);
        let (contact, ticket) = transfer_headers(&mut a, &mut m).await;
        assert_eq!(contact, None, "no contact header from a corrupt record");
        assert_eq!(ticket.as_deref(), Some("100"), "the stamp still goes");
    })
    .await;
}

/// Redis stopped: the contact store answers an error within its timeout (no hang,
/// no panic), and works again by itself once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_store_fails_fast_while_redis_is_down_and_recovers_by_itself() {
    let mut r = RedisServer::start();
    bounded(Duration::from_secs(30), async {
        let prefix = fresh_prefix();
        let (s, metrics) = shared_contacts(&r.url(), &prefix);
        let id = s.resolve(ORG, 7, None, &details("A")).await.expect("up");
        r.stop();
        for _ in 0..3 {
            let t = Instant::now();
            let e = s.resolve(ORG, 7, None, &details("A")).await.unwrap_err();
            assert!(matches!(e, ContactsError::Unavailable(_)), "{e:?}");
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "bounded: {:?}",
                t.elapsed()
            );
        }
        assert!(metrics.contact_store_errors_total.load(Ordering::Relaxed) >= 3);
        r.restart();
        // This redis-server keeps nothing on disk: the user is new to it.
        let until = Instant::now() + LANDS;
        let again = loop {
            match s.resolve(ORG, 7, Some(&id), &details("A")).await {
                Ok(v) => break v,
                Err(e) => {
                    assert!(Instant::now() < until, "never recovered: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(
            again, id,
            "the preferred id is taken for a user new to Redis"
        );
    })
    .await;
}

/// Redis stopped while a call's enrichment is waiting on Zendesk: the enrichment
/// fails (counted), the call transfers without a contact and ends; with Redis
/// back, the next call is enriched and its transfer carries the contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_during_enrichment_the_call_goes_on_and_enrichment_recovers() {
    let mut r = RedisServer::start();
    bounded(Duration::from_secs(60), async {
        let z = FakeZendesk::start().await;
        zendesk_with(&z, &[100, 200]);
        // The first user fetch is slow: Redis goes away meanwhile.
        z.script(
            &user_path(7),
            vec![
                Reply::json(200, json!({"user": {"id": 7, "name": "Ada Lovelace"}}))
                    .delayed(Duration::from_millis(800)),
            ],
        );
        let prefix = fresh_prefix();
        let mut a = node(&r, &prefix, "node-a", &z).await;
        let mut m = establish_media(&mut a.rig).await;
        let (status, v) = fire_webhook(&a.rig, 100).await;
        assert_eq!((status, &v["success"]), (200, &json!(true)), "{v}");
        assert!(
            eventually(LANDS, || !z.hits_on(&user_path(7)).is_empty()).await,
            "enrichment reached the user fetch"
        );
        r.stop();
        counted(&a, 1, |m| &m.enrichments_failed_total).await;
        assert_eq!(count(&a.rig.server, |m| &m.enrichments_total), 0);
        let (contact, _) = transfer_headers(&mut a, &mut m).await;
        assert_eq!(contact, None, "the transfer goes on without a contact");

        r.restart();
        // The node's connection to Redis is back once a read through it answers.
        let until = Instant::now() + LANDS;
        while a
            .rig
            .server
            .session_store()
            .live_by_phone(CALLER_E164)
            .await
            .is_err()
        {
            assert!(Instant::now() < until, "the node never reached Redis again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut m = establish_media(&mut a.rig).await;
        let (status, v) = fire_webhook(&a.rig, 200).await;
        assert_eq!((status, &v["success"]), (200, &json!(true)), "{v}");
        let id = enriched_contact_id(&a, &m.call.session_id).await;
        assert!(id.starts_with("ct-"), "{id}");
        let (contact, ticket) = transfer_headers(&mut a, &mut m).await;
        assert_eq!(contact.as_deref(), Some(id.as_str()));
        assert_eq!(ticket.as_deref(), Some("200"));
        assert_eq!(count(&a.rig.server, |m| &m.enrichments_total), 1);
    })
    .await;
}

/// A node that ran single-node with a SQLite file starts on Redis: its contacts
/// are copied in, an id Redis already had for a user is kept, and enrichment then
/// gives the user the id it had before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_contacts_are_copied_into_redis_at_start_keeping_ids_redis_has() {
    let r = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("handoff-contacts-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("h.db");
    bounded(Duration::from_secs(40), async {
        let local = ContactStore::open(&Store::open(Some(&db)).expect("store")).expect("contacts");
        let old7 = local
            .resolve_blocking(ORG, 7, None, &details("Ada"))
            .expect("7");
        let old8 = local
            .resolve_blocking(ORG, 8, None, &details("Bob"))
            .expect("8");
        drop(local);
        // Another node already gave user 8 an id in Redis.
        let prefix = fresh_prefix();
        let (s, _) = shared_contacts(&r.url(), &prefix);
        let theirs = s
            .resolve(ORG, 8, Some("ct-from-another-node"), &details("Bob"))
            .await
            .expect("8 in redis");
        assert_ne!(theirs, old8);

        let z = FakeZendesk::start().await;
        zendesk_with(&z, &[100]);
        let extra = format!(
            "{}store.path = {:?}\n",
            z.config(),
            db.display().to_string()
        );
        let mut a = redis_node_with(&r.url(), &prefix, "node-a", TTL_SECS, &extra).await;
        assert_eq!(
            count(&a.rig.server, |m| &m.contacts_copied_to_redis_total),
            1,
            "user 7 copied, user 8 left as Redis has it"
        );
        let got7 = s.get(ORG, 7).await.expect("get").expect("copied");
        assert_eq!(got7.contact_id, old7);
        assert_eq!(got7.details.name.as_deref(), Some("Ada"));
        let got8 = s.get(ORG, 8).await.expect("get").expect("kept");
        assert_eq!(got8.contact_id, "ct-from-another-node");

        let mut m = establish_media(&mut a.rig).await;
        let (status, v) = fire_webhook(&a.rig, 100).await;
        assert_eq!((status, &v["success"]), (200, &json!(true)), "{v}");
        let id = enriched_contact_id(&a, &m.call.session_id).await;
        assert_eq!(id, old7, "the id from the single-node days");
        let (contact, _) = transfer_headers(&mut a, &mut m).await;
        assert_eq!(contact.as_deref(), Some(old7.as_str()));
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Redis unreachable when the node starts: start-up goes on, and the copy of the
/// local contacts goes through by itself once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_copy_waits_for_redis_and_goes_through_once_it_is_back() {
    let mut r = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("handoff-contacts-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("h.db");
    bounded(Duration::from_secs(30), async {
        let store = Store::open(Some(&db)).expect("store");
        let old7 = ContactStore::open(&store)
            .expect("contacts")
            .resolve_blocking(ORG, 7, None, &details("Ada"))
            .expect("7");
        let prefix = fresh_prefix();
        let (s, metrics) = shared_contacts(&r.url(), &prefix);
        r.stop();
        let task = copy_at_start(&store, s.clone(), Duration::from_millis(100))
            .await
            .expect("the local table opens")
            .expect("Redis is down: the copy is retried in the background");
        assert_eq!(
            metrics
                .contacts_copied_to_redis_total
                .load(Ordering::Relaxed),
            0
        );
        r.restart();
        tokio::time::timeout(LANDS, task)
            .await
            .expect("the retry goes through once Redis is back")
            .expect("the retry task ends");
        assert_eq!(
            metrics
                .contacts_copied_to_redis_total
                .load(Ordering::Relaxed),
            1
        );
        let got = s.get(ORG, 7).await.expect("get").expect("copied");
        assert_eq!(got.contact_id, old7);
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
