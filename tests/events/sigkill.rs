//! handoff killed with SIGKILL while its subscriber is failing: the events still
//! queued in the outbox are sent after a restart, exactly once each and exactly as
//! they were queued (same ids, same bodies). Runs the real binary.

use super::{assert_signed, keys, of_session, types, LIMIT, SECRET};
use crate::common::capture::{Capture, Reply};
use crate::common::cli::{spawn_run as spawn_handoff, wait_metric};
use crate::common::crash::whole_call;
use crate::common::{bounded, config_text, TestUa, Transport};
use std::path::Path;
use std::time::Duration;

fn queued(db: &Path) -> Vec<(String, String, Vec<u8>)> {
    let conn = rusqlite::Connection::open(db).expect("open the outbox");
    let mut st = conn
        .prepare("SELECT e.id, e.session_id, e.body FROM outbox_events e JOIN outbox_deliveries d ON d.event_seq = e.seq WHERE d.state = 0 ORDER BY e.seq")
        .expect("query");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_events_queued_loses_none_and_resends_them_as_queued() {
    bounded(LIMIT, async {
        let dir = std::env::temp_dir().join(format!(
            "handoff-events-kill-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("handoff.db");
        let capture = Capture::start().await;
        capture.set_default(Reply::Status(500));
        let mut agent = TestUa::agent(Transport::Udp).await;
        let extra = format!("store.path = \"{}\"\n{}", db.display(), keys(&capture, ""));
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            config_text(Transport::Udp, agent.local_addr().port(), &extra),
        )
        .unwrap();

        // First run: the subscriber answers 500 to everything.
        let (mut first, udp, http) = spawn_handoff(config.clone(), dir.join("first.err")).await;
        let mut caller = TestUa::carrier(Transport::Udp, udp).await;
        let mut sids = Vec::new();
        for _ in 0..3 {
            sids.push(whole_call(&mut caller, &mut agent).await);
        }
        wait_metric(http, "handoff_events_outbox_depth", 12).await;
        capture
            .wait_for("a refused attempt", Duration::from_secs(5), |s| {
                !s.is_empty()
            })
            .await;
        first.0.kill().expect("SIGKILL");
        first.0.wait().expect("reaped");
        let before = capture.requests();
        assert!(before.iter().all(|c| !c.delivered()));

        let queued = queued(&db);
        assert_eq!(queued.len(), 12, "every event of the three calls is queued");
        for c in &before {
            let id = c.json()["id"].as_str().unwrap().to_owned();
            let q = queued
                .iter()
                .find(|(qid, _, _)| *qid == id)
                .expect("attempted events are queued");
            assert_eq!(
                c.body.as_ref(),
                q.2.as_slice(),
                "attempt body is the queued body"
            );
        }

        // Second run: the subscriber is back.
        capture.set_default(Reply::Status(200));
        let (_second, _udp, http) = spawn_handoff(config, dir.join("second.err")).await;
        capture
            .wait_for("the queued events", Duration::from_secs(10), |s| {
                s.iter().filter(|c| c.delivered()).count() >= 12
            })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let delivered = capture.delivered();
        assert_eq!(delivered.len(), 12, "each queued event exactly once");
        for (id, _, body) in &queued {
            let got: Vec<_> = delivered
                .iter()
                .filter(|c| c.json()["id"] == id.as_str())
                .collect();
            assert_eq!(got.len(), 1, "{id} delivered once");
            assert_eq!(got[0].body.as_ref(), body.as_slice(), "{id} as queued");
            assert_signed(got[0], SECRET);
        }
        for sid in &sids {
            assert_eq!(
                types(&of_session(&delivered, sid)),
                [
                    "phone_call.started",
                    "conversation.started",
                    "phone_call.answered",
                    "phone_call.ended"
                ],
                "in order after the restart"
            );
        }
        wait_metric(http, "handoff_events_outbox_depth", 0).await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
