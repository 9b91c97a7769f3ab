//! The outbox bound, end to end through the writer thread.

use super::*;
use crate::session::{Session, SessionId};
use settings::{EventsConfig, WebhookConfig};

fn settings(url: &str, capacity: usize) -> EventSettings {
    EventsConfig {
        outbox_capacity: capacity,
        retry_base_ms: 60_000,
        retry_max_ms: 60_000,
        ..Default::default()
    }
    .compile(&[WebhookConfig {
        url: url.into(),
        secret: "0123456789abcdef".into(),
        events: None,
    }])
    .unwrap()
}

fn event(i: usize) -> Event {
    let s = Session::new(
        SessionId::parse(&format!("s{i}")).unwrap(),
        "org".into(),
        "agent".into(),
        None,
        None,
        "+18005550100".into(),
    );
    let c = CallRecord::of(&s);
    Event::new(EventType::PhoneCallStarted, &c, payload::started(&c))
}

fn temp_store() -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("handoff-events-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    (Store::open(Some(&dir.join("h.db"))).unwrap(), dir)
}

fn stored(store: &Store) -> usize {
    Outbox::new(store.connect().unwrap()).event_count().unwrap()
}

/// A subscriber that answers every request 200 (one request per connection).
async fn accepting_subscriber() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "ok" });
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_full_of_undelivered_events_refuses_new_ones_and_counts_them() {
    // Nothing listens on port 1: every delivery waits for a retry a minute away.
    let (store, dir) = temp_store();
    let metrics = Arc::new(Metrics::default());
    let events = Events::start(
        &settings("http://127.0.0.1:1/", 100),
        &store,
        metrics.clone(),
    )
    .unwrap();
    for i in 0..130 {
        events.emit(event(i));
    }
    assert!(events.flush(Duration::from_secs(10)).await);
    let m = &metrics.events;
    assert_eq!(m.dropped_outbox_full.load(Ordering::Relaxed), 30);
    assert_eq!(m.outbox_depth.load(Ordering::Relaxed), 100);
    assert_eq!(m.emitted[0].load(Ordering::Relaxed), 130);
    assert_eq!(stored(&store), 100);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_history_makes_room_for_new_events() {
    let url = accepting_subscriber().await;
    let (store, dir) = temp_store();
    let metrics = Arc::new(Metrics::default());
    let events = Events::start(&settings(&url, 100), &store, metrics.clone()).unwrap();
    let m = &metrics.events;
    for round in 0..3 {
        for i in 0..80 {
            events.emit(event(round * 100 + i));
        }
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while m.delivered_total.load(Ordering::Relaxed) < 80 * (round as u64 + 1) {
            assert!(std::time::Instant::now() < until, "not delivered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(events.flush(Duration::from_secs(10)).await);
    }
    // Marking the last round delivered takes one more batch.
    events.emit(event(999));
    assert!(events.flush(Duration::from_secs(10)).await);
    assert_eq!(m.dropped_outbox_full.load(Ordering::Relaxed), 0);
    let n = stored(&store);
    assert!((80..=100).contains(&n), "history pruned to the bound: {n}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_events_without_blocking() {
    let (store, dir) = temp_store();
    let metrics = Arc::new(Metrics::default());
    let s = EventSettings {
        queue_capacity: 16,
        ..settings("http://127.0.0.1:1/", 1000)
    };
    let events = Events::start(&s, &store, metrics.clone()).unwrap();
    let started = std::time::Instant::now();
    for i in 0..5000 {
        events.emit(event(i));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "emit never waits"
    );
    assert!(events.flush(Duration::from_secs(10)).await);
    let m = &metrics.events;
    let dropped = m.dropped_queue_full.load(Ordering::Relaxed)
        + m.dropped_outbox_full.load(Ordering::Relaxed);
    assert_eq!(
        dropped as usize + stored(&store),
        5000,
        "every event stored or counted"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_events_of_a_removed_subscriber_are_given_up_at_start() {
    let (store, dir) = temp_store();
    let first = Events::start(
        &settings("http://127.0.0.1:1/a", 1000),
        &store,
        Arc::new(Metrics::default()),
    )
    .unwrap();
    for i in 0..3 {
        first.emit(event(i));
    }
    assert!(first.flush(Duration::from_secs(10)).await);
    drop(first);
    assert_eq!(
        Outbox::new(store.connect().unwrap())
            .pending()
            .unwrap()
            .len(),
        3
    );
    let metrics = Arc::new(Metrics::default());
    let second = Events::start(
        &settings("http://127.0.0.1:1/b", 1000),
        &store,
        metrics.clone(),
    )
    .unwrap();
    assert!(second.flush(Duration::from_secs(10)).await);
    assert!(Outbox::new(store.connect().unwrap())
        .pending()
        .unwrap()
        .is_empty());
    assert_eq!(metrics.events.outbox_depth.load(Ordering::Relaxed), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_older_than_max_age_is_given_up_unsent() {
    let url = accepting_subscriber().await;
    let (store, dir) = temp_store();
    let metrics = Arc::new(Metrics::default());
    let events = Events::start(&settings(&url, 1000), &store, metrics.clone()).unwrap();
    let mut old = event(1);
    old.created_at -= Duration::from_secs(2 * 86_400);
    events.emit(old);
    events.emit(event(2));
    let m = &metrics.events;
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while m.delivered_total.load(Ordering::Relaxed) + m.failed_total.load(Ordering::Relaxed) < 2 {
        assert!(std::time::Instant::now() < until, "not finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m.failed_total.load(Ordering::Relaxed), 1);
    assert_eq!(m.delivered_total.load(Ordering::Relaxed), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
