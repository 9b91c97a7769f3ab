//! The relay over time: timeouts, hold, switch, re-INVITE, stop.

use super::*;

#[tokio::test]
async fn timeout_reports_the_silent_side_and_stops() {
    let pool = pool(44400);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let config = RelayConfig {
        timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    };
    let mut call = start(&pool, config, caller.remote(), far.remote());
    let began = Instant::now();
    // Only the far side talks.
    let talker = Arc::clone(&far.rtp);
    let to = call.far_rtp;
    let talking = tokio::spawn(async move {
        for seq in 0..20u16 {
            let _ = talker.send_to(&voice(seq, 0), to).await;
            sleep(Duration::from_millis(50)).await;
        }
    });
    let event = timeout(Duration::from_secs(1), call.events.recv())
        .await
        .expect("event in time");
    assert_eq!(event, Some(MediaEvent::Timeout { side: Side::Caller }));
    assert!(began.elapsed() >= Duration::from_millis(290));
    let stopped = timeout(WAIT, call.events.recv())
        .await
        .expect("stopped in time");
    assert!(
        matches!(stopped, Some(MediaEvent::Stopped { stats }) if stats.far.received.packets > 0)
    );
    assert_eq!(pool.in_use(), 0, "ports freed");
    talking.abort();
}

#[tokio::test]
async fn hold_uses_the_hold_timeout() {
    let pool = pool(44600);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let config = RelayConfig {
        timeout: Duration::from_millis(200),
        hold_timeout: Duration::ZERO,
        ..RelayConfig::default()
    };
    let mut call = start(&pool, config, caller.remote(), far.remote());
    // Media flowed on both sides before the hold: the hold timeout is theirs.
    caller
        .rtp
        .send_to(&voice(0, 1), call.caller_rtp)
        .await
        .expect("send");
    far.rtp
        .send_to(&voice(0, 2), call.far_rtp)
        .await
        .expect("send");
    recv(&far.rtp).await;
    recv(&caller.rtp).await;
    call.relay.hold(true).expect("running");
    assert!(
        timeout(Duration::from_millis(400), call.events.recv())
            .await
            .is_err(),
        "no timeout on hold"
    );
    call.relay.hold(false).expect("running");
    let event = timeout(WAIT, call.events.recv())
        .await
        .expect("timeout after resume");
    assert_eq!(event, Some(MediaEvent::Timeout { side: Side::Caller }));
}

#[tokio::test]
async fn switch_far_retargets_and_nothing_reaches_the_old_leg() {
    let pool = pool(44800);
    let (caller, old_far, new_far) = (Phone::new().await, Phone::new().await, Phone::new().await);
    let call = start(
        &pool,
        RelayConfig::default(),
        caller.remote(),
        old_far.remote(),
    );
    caller
        .rtp
        .send_to(&voice(0, 0), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&old_far.rtp).await, voice(0, 0));

    // The caller keeps talking through the switch.
    let talker = Arc::clone(&caller.rtp);
    let to = call.caller_rtp;
    let talking = tokio::spawn(async move {
        for seq in 1..200u16 {
            let _ = talker.send_to(&voice(seq, 0), to).await;
            sleep(Duration::from_millis(2)).await;
        }
    });
    sleep(Duration::from_millis(20)).await;
    let new_ports = pool.allocate().expect("transfer leg ports");
    let new_far_rtp = new_ports.rtp_addr();
    let old_stats = call
        .relay
        .switch_far(RelayLeg::new(new_ports, new_far.remote()))
        .expect("running")
        .await
        .expect("switched");
    // Loopback delivers synchronously: whatever the old leg got was sent
    // before the switch returned. Drain it, then it must stay silent.
    let mut buf = [0u8; 2048];
    let mut before = 0u64;
    while old_far.rtp.try_recv_from(&mut buf).is_ok() {
        before += 1;
    }
    assert!(before >= 1);
    assert_eq!(old_stats.sent.packets, before + 1);
    assert_silent(&old_far.rtp).await;
    let first = recv(&new_far.rtp).await;
    assert!(first.len() == VOICE_LEN);
    talking.abort();

    // The new far leg talks back to the caller; the old leg's ports are freed.
    new_far
        .rtp
        .send_to(&voice(7, 3), new_far_rtp)
        .await
        .expect("send");
    let mut got = recv(&caller.rtp).await;
    while got != voice(7, 3) {
        got = recv(&caller.rtp).await;
    }
    assert_eq!(pool.in_use(), 2);
    let stats = call.relay.stats().await.expect("running");
    assert!(stats.far.sent.packets >= 1 && stats.far.received.packets == 1);
}

#[tokio::test]
async fn set_remote_moves_the_destination() {
    let pool = pool(45000);
    let (caller, far, moved) = (Phone::new().await, Phone::new().await, Phone::new().await);
    let call = start(&pool, RelayConfig::default(), caller.remote(), far.remote());
    call.relay
        .set_remote(Side::Far, moved.remote())
        .expect("running");
    caller
        .rtp
        .send_to(&voice(0, 0), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&moved.rtp).await, voice(0, 0));
    assert_silent(&far.rtp).await;
}

#[tokio::test]
async fn stop_and_drop_report_final_stats_and_free_ports() {
    let pool = pool(45400);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let mut call = start(&pool, RelayConfig::default(), caller.remote(), far.remote());
    caller
        .rtp
        .send_to(&voice(0, 0), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtp).await, voice(0, 0));
    let stats = call.relay.stop().await.expect("final stats");
    assert_eq!(stats.caller.received.packets, 1);
    assert_eq!(
        call.events.recv().await,
        Some(MediaEvent::Stopped {
            stats: Box::new(stats)
        })
    );
    assert_eq!(pool.in_use(), 0);

    let mut call = start(&pool, RelayConfig::default(), caller.remote(), far.remote());
    assert_eq!(pool.in_use(), 2);
    drop(call.relay);
    let event = timeout(WAIT, call.events.recv())
        .await
        .expect("stopped in time");
    assert!(matches!(event, Some(MediaEvent::Stopped { .. })));
    assert_eq!(pool.in_use(), 0);
}

/// An outbound call's transfer: the party that stays (the callee) is on the
/// far side, so the sides swap first and `switch_far` then replaces the
/// other one (the AI agent). The callee keeps its ports and its latch.
#[tokio::test]
async fn swapped_sides_let_switch_far_replace_the_caller_side() {
    let pool = pool(46400);
    let (agent, callee, target) = (Phone::new().await, Phone::new().await, Phone::new().await);
    let call = start(
        &pool,
        RelayConfig::default(),
        agent.remote(),
        callee.remote(),
    );
    callee
        .rtp
        .send_to(&voice(0, 1), call.far_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&agent.rtp).await, voice(0, 1));

    call.relay.swap_sides().expect("running");
    let target_ports = pool.allocate().expect("target ports");
    let target_rtp = target_ports.rtp_addr();
    let agent_stats = call
        .relay
        .switch_far(RelayLeg::new(target_ports, target.remote()))
        .expect("running")
        .await
        .expect("switched");
    // The agent's side went: its statistics are what it received before.
    assert_eq!(agent_stats.sent.packets, 1);

    // The callee, on the same ports as before, now reaches the target...
    callee
        .rtp
        .send_to(&voice(1, 1), call.far_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&target.rtp).await, voice(1, 1));
    assert_silent(&agent.rtp).await;
    // ...and the target reaches the callee.
    target
        .rtp
        .send_to(&voice(2, 2), target_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&callee.rtp).await, voice(2, 2));
    // The agent's old ports are back in the pool.
    assert_eq!(pool.in_use(), 2);
    let stats = call.relay.stats().await.expect("running");
    assert_eq!(stats.caller.received.packets, 2, "the callee's, both");
}
