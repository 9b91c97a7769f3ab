//! Strict latching and the hold timeout's first-packet rule (issue 12): a
//! stranger's packets never take a call's media; a side that never sent RTP
//! gets the normal timeout even on hold.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

// A stranger on another loopback address (Linux answers for all of 127/8).
async fn stranger() -> UdpSocket {
    UdpSocket::bind(("127.0.0.9", 0))
        .await
        .expect("bind 127.0.0.9")
}

fn counted(config: RelayConfig) -> (RelayConfig, Arc<AtomicU64>) {
    let refused = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&refused);
    let hook = OnRefused(Arc::new(move |n| {
        count.fetch_add(n, Ordering::Relaxed);
    }));
    (
        RelayConfig {
            on_refused: Some(hook),
            ..config
        },
        refused,
    )
}

#[tokio::test]
async fn a_stranger_first_cannot_take_the_callers_media() {
    let pool = pool(45400);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let (config, refused) = counted(RelayConfig::default());
    let call = start(&pool, config, caller.remote(), far.remote());

    // The attacker's packet comes before the caller's first one.
    let attacker = stranger().await;
    attacker
        .send_to(&voice(0, 66), call.caller_rtp)
        .await
        .expect("send");
    assert_silent(&far.rtp).await;
    // The far side's audio still goes to the caller's SDP address...
    far.rtp
        .send_to(&voice(0, 2), call.far_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&caller.rtp).await, voice(0, 2));
    assert_silent(&attacker).await;
    // ...and the caller's own packets still reach the far side.
    caller
        .rtp
        .send_to(&voice(1, 1), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtp).await, voice(1, 1));
    // RTCP too: the stranger's report is refused.
    attacker
        .send_to(&[0x80, 201, 0, 1, 0, 0, 0, 9], call.caller_rtcp)
        .await
        .expect("send");
    assert_silent(&far.rtcp).await;

    let stats = call.relay.stats().await.expect("running");
    assert_eq!(stats.caller.received.refused, 2);
    assert_eq!(stats.caller.received.packets, 1);
    assert_eq!(refused.load(Ordering::Relaxed), 2, "counted live");
}

#[tokio::test]
async fn a_leg_with_no_sdp_address_latches_only_inside_its_networks() {
    let pool = pool(45600);
    let far = Phone::new().await;
    let (config, refused) = counted(RelayConfig::default());
    let caller_ports = pool.allocate().expect("ports");
    let far_ports = pool.allocate().expect("ports");
    let (caller_rtp, far_rtp) = (caller_ports.rtp_addr(), far_ports.rtp_addr());
    let allowed: Arc<[ipnet::IpNet]> = Arc::from(vec!["127.0.0.8/30".parse().expect("CIDR")]);
    let (relay, _events) = MediaRelay::start(
        config,
        RelayLeg::new(caller_ports, Remote::unknown()).allow(allowed),
        RelayLeg::new(far_ports, far.remote()),
    )
    .expect("relay starts");

    // 127.0.0.1 is outside 127.0.0.8/30: refused.
    let outside = bind().await;
    outside
        .send_to(&voice(0, 1), caller_rtp)
        .await
        .expect("send");
    assert_silent(&far.rtp).await;
    // 127.0.0.9 is inside: it latches and is heard both ways.
    let inside = stranger().await;
    inside
        .send_to(&voice(1, 1), caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtp).await, voice(1, 1));
    far.rtp.send_to(&voice(2, 2), far_rtp).await.expect("send");
    assert_eq!(recv(&inside).await, voice(2, 2));
    assert_eq!(refused.load(Ordering::Relaxed), 1);
    drop(relay);
}

#[tokio::test]
async fn on_hold_a_side_that_never_sent_rtp_has_the_normal_timeout() {
    let pool = pool(45800);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let config = RelayConfig {
        timeout: Duration::from_millis(300),
        hold_timeout: Duration::from_secs(3600),
        ..RelayConfig::default()
    };
    let mut call = start(&pool, config, caller.remote(), far.remote());
    // The far side talks on; the caller never sends and is on hold at once.
    let talker = Arc::clone(&far.rtp);
    let to = call.far_rtp;
    let talking = tokio::spawn(async move {
        for seq in 0..40u16 {
            let _ = talker.send_to(&voice(seq, 0), to).await;
            sleep(Duration::from_millis(50)).await;
        }
    });
    call.relay.hold(true).expect("running");
    let began = Instant::now();
    let event = timeout(Duration::from_secs(1), call.events.recv())
        .await
        .expect("the normal timeout, not the hold one");
    assert_eq!(event, Some(MediaEvent::Timeout { side: Side::Caller }));
    assert!(began.elapsed() >= Duration::from_millis(250));
    talking.abort();
}

#[tokio::test]
async fn while_ringing_nobody_need_talk() {
    let pool = pool(46200);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let config = RelayConfig {
        timeout: Duration::from_millis(200),
        hold_timeout: Duration::from_secs(3600),
        ..RelayConfig::default()
    };
    let mut call = start(&pool, config, caller.remote(), far.remote());
    call.relay.ringing().expect("running");
    assert!(
        timeout(Duration::from_millis(500), call.events.recv())
            .await
            .is_err(),
        "no timeout before the answer"
    );
    // Answered, not on hold, nobody talks: the normal timeout.
    call.relay.hold(false).expect("running");
    let event = timeout(WAIT, call.events.recv())
        .await
        .expect("timeout after the answer");
    assert!(matches!(event, Some(MediaEvent::Timeout { .. })));
}
