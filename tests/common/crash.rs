//! What the crash and cluster tests share: calls left up (answered, ringing) or
//! made whole through a running handoff, the ends a subscriber got, the live
//! calls a store file records, and a stop by SIGTERM.

use crate::common::build::{Dialog, AI_SDP};
use crate::common::capture::{Capture, Captured};
use crate::common::cli::Running;
use crate::common::{InviteOpts, TestUa, WAIT};
use handoff::sip::message::Method;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a stopped handoff may take to exit.
const SOON: Duration = Duration::from_secs(10);

fn hmac_hex(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The README's signature scheme, computed here independently of handoff's code.
pub fn assert_signed(c: &Captured, secret: &str) {
    let ts = c.header("x-handoff-timestamp").expect("timestamp header");
    let secs: u64 = ts.parse().expect("Unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(now.abs_diff(secs) < 300, "timestamp {secs} is now");
    let sig = c.header("x-handoff-signature").expect("signature header");
    assert_eq!(sig, format!("v1={}", hmac_hex(secret, ts, &c.body)));
    assert_ne!(sig, format!("v1={}", hmac_hex("wrong-secret", ts, &c.body)));
    assert_eq!(c.header("x-handoff-event-id"), c.json()["id"].as_str());
    assert_eq!(c.header("content-type"), Some("application/json"));
}

/// Delivered events of one type, by session.
pub fn delivered_of(capture: &Capture, kind: &str, sid: &str) -> Vec<Captured> {
    capture
        .delivered()
        .into_iter()
        .filter(|c| c.json()["type"] == kind && c.json()["session_id"] == sid)
        .collect()
}

pub fn ends(capture: &Capture) -> Vec<Captured> {
    capture
        .delivered()
        .into_iter()
        .filter(|c| {
            matches!(
                c.json()["type"].as_str(),
                Some("phone_call.ended" | "phone_call.failed")
            )
        })
        .collect()
}

/// A call the AI agent answers and nobody hangs up; returns its session id and
/// the caller's dialog.
pub async fn answered_call(caller: &mut TestUa, agent: &mut TestUa) -> (String, Dialog) {
    let invite = caller.invite(&InviteOpts::default());
    caller.send(&invite).await;
    let ai_invite = agent.expect_request(Method::Invite, WAIT).await;
    let sid = ai_invite
        .msg
        .header("X-OPENCX-SESSION-ID")
        .unwrap()
        .to_owned();
    agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    let ok = caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await
        .msg;
    let dlg = Dialog::as_uac(&invite, &ok);
    caller.send(&caller.ack(&dlg, None)).await;
    agent.expect_request(Method::Ack, WAIT).await;
    agent.clear_backlog();
    caller.clear_backlog();
    (sid, dlg)
}

/// A call the AI agent leaves ringing (180, no answer); returns its session id.
pub async fn ringing_call(caller: &mut TestUa, agent: &mut TestUa) -> String {
    let invite = caller.invite(&InviteOpts::default());
    caller.send(&invite).await;
    let ai_invite = agent.expect_request(Method::Invite, WAIT).await;
    let sid = ai_invite
        .msg
        .header("X-OPENCX-SESSION-ID")
        .unwrap()
        .to_owned();
    agent.respond(&ai_invite, 180, &[], None).await;
    caller.expect_response_to(Method::Invite, 180, WAIT).await;
    agent.clear_backlog();
    caller.clear_backlog();
    sid
}

/// A call answered and hung up by the caller: it ends normally.
pub async fn whole_call(caller: &mut TestUa, agent: &mut TestUa) -> String {
    let (sid, mut dlg) = answered_call(caller, agent).await;
    caller.send(&caller.bye(&mut dlg)).await;
    caller.expect_response_to(Method::Bye, 200, WAIT).await;
    let bye = agent.expect_request(Method::Bye, WAIT).await;
    agent.respond(&bye, 200, &[], None).await;
    agent.clear_backlog();
    caller.clear_backlog();
    sid
}

/// Live calls recorded in the store file.
pub fn live_rows(db: &Path) -> Vec<(String, Option<i64>)> {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    let mut st = conn
        .prepare("SELECT session_id, answered_ms FROM live_calls ORDER BY session_id")
        .expect("the live_calls table");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// SIGTERM by PID, then wait for the exit (a clean stop).
pub fn stop_cleanly(mut run: Running) {
    let pid = run.0.id() as libc::pid_t;
    // SAFETY: a plain signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let until = Instant::now() + SOON;
    while run.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < until, "handoff did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "handoff-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
