//! Packets through the relay: integrity, latching, RTCP, DTMF, stats.

use super::*;

#[tokio::test]
async fn every_packet_arrives_intact_and_in_order_both_ways() {
    let pool = pool(43000);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let call = start(&pool, RelayConfig::default(), caller.remote(), far.remote());
    let at_far = tokio::spawn(recv_stream(Arc::clone(&far.rtp), 200, 1));
    let at_caller = tokio::spawn(recv_stream(Arc::clone(&caller.rtp), 200, 2));
    tokio::join!(
        send_stream(&caller.rtp, call.caller_rtp, 200, 1),
        send_stream(&far.rtp, call.far_rtp, 200, 2)
    );
    at_far.await.expect("far side got every packet");
    at_caller.await.expect("caller side got every packet");

    let stats = call.relay.stats().await.expect("running");
    for side in [stats.caller, stats.far] {
        assert_eq!(side.received.packets, 200);
        assert_eq!(side.received.bytes, 200 * VOICE_LEN as u64);
        assert_eq!(side.received.lost, 0);
        assert_eq!(side.received.dropped, 0);
        assert_eq!(side.sent.packets, 200);
        assert_eq!(side.sent.bytes, 200 * VOICE_LEN as u64);
    }
}

#[tokio::test]
async fn latches_to_the_source_port_not_the_sdp_address() {
    let pool = pool(43200);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    // The caller's SDP names a port it never sends from (NAT rewrote it).
    let sdp_only = bind().await;
    let sdp_remote = Remote::new(sdp_only.local_addr().expect("addr"));
    let call = start(&pool, RelayConfig::default(), sdp_remote, far.remote());

    // Before the caller sends, the SDP address is all there is.
    far.rtp
        .send_to(&voice(0, 0), call.far_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&sdp_only).await, voice(0, 0));

    caller
        .rtp
        .send_to(&voice(0, 9), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtp).await, voice(0, 9));
    far.rtp
        .send_to(&voice(1, 0), call.far_rtp)
        .await
        .expect("send");
    assert_eq!(
        recv(&caller.rtp).await,
        voice(1, 0),
        "latched to the real source"
    );
    assert_silent(&sdp_only).await;
}

#[tokio::test]
async fn stranger_after_latching_is_dropped_and_counted() {
    let pool = pool(43400);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let call = start(&pool, RelayConfig::default(), caller.remote(), far.remote());
    caller
        .rtp
        .send_to(&voice(0, 0), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtp).await, voice(0, 0));

    let stranger = bind().await;
    stranger
        .send_to(&voice(1, 7), call.caller_rtp)
        .await
        .expect("send");
    assert_silent(&far.rtp).await;
    let stats = call.relay.stats().await.expect("running");
    assert_eq!(stats.caller.received.dropped, 1);
    assert_eq!(stats.caller.received.packets, 1);
}

#[tokio::test]
async fn without_latching_only_the_sdp_address_is_heard() {
    let pool = pool(43600);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let config = RelayConfig {
        latching: false,
        ..RelayConfig::default()
    };
    let call = start(&pool, config, caller.remote(), far.remote());
    let elsewhere = bind().await;
    elsewhere
        .send_to(&voice(0, 1), call.caller_rtp)
        .await
        .expect("send");
    assert_silent(&far.rtp).await;
    caller
        .rtp
        .send_to(&voice(1, 1), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtp).await, voice(1, 1));
    // Replies go to the SDP address, not to the stranger.
    far.rtp
        .send_to(&voice(2, 2), call.far_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&caller.rtp).await, voice(2, 2));
    assert_silent(&elsewhere).await;
    assert_eq!(
        call.relay
            .stats()
            .await
            .expect("running")
            .caller
            .received
            .dropped,
        1
    );
}

#[tokio::test]
async fn non_rtp_on_the_rtp_port_is_dropped() {
    let pool = pool(43800);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let call = start(&pool, RelayConfig::default(), caller.remote(), far.remote());
    // Version 0 and a too-short datagram.
    caller
        .rtp
        .send_to(&[0u8; 20], call.caller_rtp)
        .await
        .expect("send");
    caller
        .rtp
        .send_to(&[0x80, 0, 1], call.caller_rtp)
        .await
        .expect("send");
    assert_silent(&far.rtp).await;
    assert_eq!(
        call.relay
            .stats()
            .await
            .expect("running")
            .caller
            .received
            .dropped,
        2
    );
    // Garbage did not latch: a real packet from elsewhere still can.
    let real = bind().await;
    real.send_to(&voice(0, 0), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtp).await, voice(0, 0));
}

#[tokio::test]
async fn rtcp_is_forwarded_both_ways() {
    let pool = pool(44000);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let call = start(&pool, RelayConfig::default(), caller.remote(), far.remote());
    // An empty receiver report (RFC 3550 6.4.2) and a sender report stub.
    let rr = [0x80, 201, 0, 1, 0x0b, 0xad, 0xca, 0xfe];
    let sr: Vec<u8> = [0x80, 200, 0, 6]
        .into_iter()
        .chain((0..24).map(|i| i as u8))
        .collect();
    caller
        .rtcp
        .send_to(&rr, call.caller_rtcp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtcp).await, rr);
    far.rtcp.send_to(&sr, call.far_rtcp).await.expect("send");
    assert_eq!(recv(&caller.rtcp).await, sr);
    // Not RTCP: wrong version, too short.
    caller
        .rtcp
        .send_to(&[0x40, 201, 0, 1, 0, 0, 0, 0], call.caller_rtcp)
        .await
        .expect("send");
    caller
        .rtcp
        .send_to(&[0x80, 201, 0], call.caller_rtcp)
        .await
        .expect("send");
    assert_silent(&far.rtcp).await;

    let stats = call.relay.stats().await.expect("running");
    assert_eq!(stats.caller.received.rtcp_packets, 1);
    assert_eq!(stats.caller.received.dropped, 2);
    assert_eq!(stats.far.sent.rtcp_packets, 1);
    assert_eq!(stats.caller.sent.rtcp_bytes, sr.len() as u64);
}

#[tokio::test]
async fn telephone_events_pass_unchanged() {
    let pool = pool(44200);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let call = start(&pool, RelayConfig::default(), caller.remote(), far.remote());
    // RFC 4733 2.3: event 5, volume 10, growing duration, end bit on the last,
    // one timestamp for the whole event, marker on the first.
    let events = [
        rtp(10, 8000, 101, true, &[5, 0x0a, 0x00, 0xa0]),
        rtp(11, 8000, 101, false, &[5, 0x0a, 0x01, 0x40]),
        rtp(12, 8000, 101, false, &[5, 0x8a, 0x01, 0xe0]),
        rtp(13, 8000, 101, false, &[5, 0x8a, 0x01, 0xe0]),
    ];
    for event in &events {
        caller
            .rtp
            .send_to(event, call.caller_rtp)
            .await
            .expect("send");
    }
    for event in &events {
        assert_eq!(&recv(&far.rtp).await, event);
    }
}

#[tokio::test]
async fn stats_count_loss_for_a_gap() {
    let pool = pool(45200);
    let (caller, far) = (Phone::new().await, Phone::new().await);
    let call = start(&pool, RelayConfig::default(), caller.remote(), far.remote());
    let sent: Vec<u16> = (0..20).filter(|seq| !(5..8).contains(seq)).collect();
    for &seq in &sent {
        caller
            .rtp
            .send_to(&voice(seq, 0), call.caller_rtp)
            .await
            .expect("send");
    }
    for &seq in &sent {
        assert_eq!(recv(&far.rtp).await, voice(seq, 0));
    }
    let stats = call.relay.stats().await.expect("running");
    assert_eq!(stats.caller.received.packets, 17);
    assert_eq!(stats.caller.received.bytes, 17 * VOICE_LEN as u64);
    assert_eq!(stats.caller.received.lost, 3);
    assert_eq!(stats.far.sent.packets, 17);
    assert_eq!(stats.far.received.packets, 0);
}
