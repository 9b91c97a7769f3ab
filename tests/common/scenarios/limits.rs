//! Overload and shutdown: the call limit, the calls-per-second limit, and draining.

use super::*;
use crate::common::build::ack_for_non_2xx;
use crate::common::{Transport, CALLER_E164};
use std::collections::HashMap;
use std::time::Instant;

const DTMF: &str = "Signal=1\r\nDuration=100\r\n";

pub async fn second_call_over_max_calls_gets_503_and_first_continues(t: Transport) {
    let mut rig = Rig::new(t, "limits.max_calls = 1").await;
    let mut call = establish(&mut rig, InviteOpts::default()).await;

    let mut second = rig.another_caller().await;
    let invite =
        second.invite(&InviteOpts::default().from("\"Bob\" <sip:+14155550199@carrier.example>"));
    second.send(&invite).await;
    let busy = second.expect_response_to(Method::Invite, 503, WAIT).await;
    let retry: u32 = busy
        .msg
        .header("Retry-After")
        .expect("503 carries Retry-After")
        .trim()
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!(retry > 0);
    second.send(&ack_for_non_2xx(&invite, &busy.msg)).await;
    rig.agent
        .expect_silence("a second AI-leg INVITE", Duration::from_millis(200), |m| {
            m.method() == Some(&Method::Invite)
        })
        .await;
    assert_eq!(count(&rig.server, |m| &m.calls_rejected_overload_total), 1);

    // The first call still works: an INFO goes through, then the hang-up.
    let info = rig.caller.in_dialog(
        &mut call.caller_dlg,
        Method::Info,
        Some(("application/dtmf-relay", DTMF)),
    );
    rig.caller.send(&info).await;
    let got = rig.agent.expect_request(Method::Info, WAIT).await;
    rig.agent.respond(&got, 200, &[], None).await;
    rig.caller.expect_response_to(Method::Info, 200, WAIT).await;
    bye_from_caller(&mut rig, &mut call).await;
    assert_call_gone(&rig.server, &call.session_id, CALLER_E164).await;
}

pub async fn burst_over_calls_per_second_gets_some_503s(t: Transport) {
    let mut rig = Rig::new(t, "limits.max_calls_per_second = 2").await;
    let mut call_ids = Vec::new();
    for _ in 0..5 {
        let invite = rig.caller.invite(&InviteOpts::default());
        call_ids.push(invite.call_id().unwrap().to_owned());
        rig.caller.send(&invite).await;
    }
    // The first response each INVITE gets: 100 (accepted) or 503 (refused).
    let mut first: HashMap<String, u16> = HashMap::new();
    let until = Instant::now() + WAIT;
    while first.len() < call_ids.len() && Instant::now() < until {
        let Some(r) = rig
            .caller
            .recv(until.saturating_duration_since(Instant::now()))
            .await
        else {
            break;
        };
        if let (Some(cid), Some(status)) = (r.msg.call_id(), r.msg.status()) {
            first.entry(cid.to_owned()).or_insert(status);
        }
    }
    assert_eq!(
        first.len(),
        5,
        "every INVITE of the burst is answered:\n{}",
        rig.caller.history()
    );
    let refused = first.values().filter(|s| **s == 503).count();
    let accepted = first.values().filter(|s| **s == 100).count();
    assert!(
        refused >= 2,
        "a burst of 5 over a limit of 2/s: only {refused} got 503:\n{}",
        rig.caller.history()
    );
    assert!(
        accepted >= 1,
        "no INVITE of the burst was accepted:\n{}",
        rig.caller.history()
    );
    assert_eq!(
        refused + accepted,
        5,
        "unexpected first responses: {first:?}"
    );
    assert_eq!(
        count(&rig.server, |m| &m.calls_rejected_overload_total),
        refused as u64
    );
    // Release the accepted calls.
    for _ in 0..accepted {
        let inv = rig.agent.expect_request(Method::Invite, WAIT).await;
        reject(&mut rig.agent, &inv, 486).await;
    }
}

pub async fn drain_refuses_new_calls_and_byes_live_call(t: Transport) {
    let mut rig = Rig::new(t, "").await;
    let call = establish(&mut rig, InviteOpts::default()).await;
    let mut late = rig.another_caller().await;
    let Rig {
        server,
        caller,
        agent,
        ..
    } = &mut rig;
    let started = Instant::now();
    let checks = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let invite = late.invite(&InviteOpts::default());
        late.send(&invite).await;
        let refused = late.expect_response_to(Method::Invite, 503, WAIT).await;
        assert!(
            refused.msg.header("Retry-After").is_some(),
            "503 while draining carries Retry-After"
        );
        late.send(&ack_for_non_2xx(&invite, &refused.msg)).await;

        let caller_bye = caller
            .expect_request(Method::Bye, Duration::from_secs(4))
            .await;
        assert_in_dialog(&caller_bye.msg, &call.caller_dlg, "drain BYE to the caller");
        caller.respond(&caller_bye, 200, &[], None).await;
        let ai_bye = agent.expect_request(Method::Bye, WAIT).await;
        assert_in_dialog(&ai_bye.msg, &call.agent_dlg, "drain BYE to the AI agent");
        agent.respond(&ai_bye, 200, &[], None).await;
        let waited = caller_bye.at.duration_since(started);
        assert!(
            waited >= Duration::from_millis(900),
            "live call got BYE after {waited:?}, before drain_timeout_secs (1 s)"
        );
    };
    tokio::join!(server.drain(), checks);
    assert_eq!(server.active_calls(), 0, "calls left after drain");
    assert!(session(server, &call.session_id).ended_at.is_some());
}
