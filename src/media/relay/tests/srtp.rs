//! SRTP on one leg (issue 14): plain on one side, SRTP on the other, both
//! ways, RTCP too; forged and replayed packets from the peer's own address
//! neither relayed nor latched; keys changed mid-stream and on a switch.
//! A test phone on an SRTP leg holds its own contexts: it seals with the
//! leg's `receive` key and opens with the leg's `send` key.

use super::*;
use crate::media::srtp::{LegSrtp, SrtpContext, SrtpKey, SrtpSuite, MAX_OVERHEAD};
use std::sync::Mutex;

fn leg_keys(suite: SrtpSuite) -> LegSrtp {
    LegSrtp {
        receive: SrtpKey::generate(suite),
        send: SrtpKey::generate(suite),
    }
}

/// The peer on an SRTP leg: what it seals the relay opens, and back.
struct SrtpPhone {
    phone: Phone,
    seal: SrtpContext,
    open: SrtpContext,
}

impl SrtpPhone {
    async fn new(keys: &LegSrtp) -> SrtpPhone {
        SrtpPhone {
            phone: Phone::new().await,
            seal: SrtpContext::new(&keys.receive),
            open: SrtpContext::new(&keys.send),
        }
    }

    fn seal_rtp(&mut self, plain: &[u8]) -> Vec<u8> {
        seal_rtp(&mut self.seal, plain)
    }

    fn seal_rtcp(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + MAX_OVERHEAD, 0);
        let n = self.seal.protect_rtcp(&mut buf, plain.len()).expect("seal");
        buf.truncate(n);
        buf
    }

    async fn recv_rtp(&mut self) -> Vec<u8> {
        let mut packet = recv(&self.phone.rtp).await;
        let n = self
            .open
            .unprotect_rtp(&mut packet)
            .expect("authentic SRTP");
        packet.truncate(n);
        packet
    }

    async fn recv_rtcp(&mut self) -> Vec<u8> {
        let mut packet = recv(&self.phone.rtcp).await;
        let n = self
            .open
            .unprotect_rtcp(&mut packet)
            .expect("authentic SRTCP");
        packet.truncate(n);
        packet
    }
}

fn seal_rtp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_OVERHEAD, 0);
    let n = ctx.protect_rtp(&mut buf, plain.len()).expect("seal");
    buf.truncate(n);
    buf
}

const REPORT: [u8; 8] = [0x80, 201, 0, 1, 0, 0, 0x30, 0x39];

fn srtp_counted(config: RelayConfig) -> (RelayConfig, Arc<Mutex<SrtpStats>>) {
    let total = Arc::new(Mutex::new(SrtpStats::default()));
    let sink = Arc::clone(&total);
    let hook = OnSrtpDropped(Arc::new(move |d: &SrtpStats| {
        let mut t = sink.lock().expect("lock");
        t.auth_failures += d.auth_failures;
        t.replays += d.replays;
        t.ssrc_overflows += d.ssrc_overflows;
        t.protect_failures += d.protect_failures;
    }));
    (
        RelayConfig {
            on_srtp_dropped: Some(hook),
            ..config
        },
        total,
    )
}

/// One leg to start: its peer's addresses and its keys, if SRTP.
struct Spec {
    remote: Remote,
    srtp: Option<LegSrtp>,
}

impl Spec {
    fn plain(phone: &Phone) -> Spec {
        Spec {
            remote: phone.remote(),
            srtp: None,
        }
    }

    fn srtp(phone: &SrtpPhone, keys: &LegSrtp) -> Spec {
        Spec {
            remote: phone.phone.remote(),
            srtp: Some(keys.clone()),
        }
    }

    fn leg(self, ports: PortPair) -> RelayLeg {
        let leg = RelayLeg::new(ports, self.remote);
        match self.srtp {
            Some(keys) => leg.srtp(keys),
            None => leg,
        }
    }
}

fn start_with(pool: &PortPool, config: RelayConfig, caller: Spec, far: Spec) -> Call {
    let caller_ports = pool.allocate().expect("caller ports");
    let far_ports = pool.allocate().expect("far ports");
    let (caller_rtp, caller_rtcp) = (caller_ports.rtp_addr(), caller_ports.rtcp_addr());
    let (far_rtp, far_rtcp) = (far_ports.rtp_addr(), far_ports.rtcp_addr());
    let (relay, events) = MediaRelay::start(config, caller.leg(caller_ports), far.leg(far_ports))
        .expect("relay starts");
    Call {
        relay,
        events,
        caller_rtp,
        caller_rtcp,
        far_rtp,
        far_rtcp,
    }
}

// Plain caller, SRTP far leg: 50 packets each way, decrypted intact and in
// order, and RTCP both ways; in both suites.
#[tokio::test]
async fn plain_caller_and_srtp_far_leg_both_ways() {
    for (suite, base) in [
        (SrtpSuite::AesCm128HmacSha1_80, 46400),
        (SrtpSuite::AesCm128HmacSha1_32, 46500),
    ] {
        let pool = PortPool::new(LOCALHOST, base, base + 99).expect("valid range");
        let keys = leg_keys(suite);
        let caller = Phone::new().await;
        let mut far = SrtpPhone::new(&keys).await;
        let call = start_with(
            &pool,
            RelayConfig::default(),
            Spec::plain(&caller),
            Spec::srtp(&far, &keys),
        );
        for seq in 0..50u16 {
            caller
                .rtp
                .send_to(&voice(seq, 1), call.caller_rtp)
                .await
                .expect("send");
            let got = far.recv_rtp().await;
            assert_eq!(
                got,
                voice(seq, 1),
                "caller packet {seq} decrypted at the far phone"
            );
        }
        for seq in 0..50u16 {
            let sealed = far.seal_rtp(&voice(seq, 2));
            far.phone
                .rtp
                .send_to(&sealed, call.far_rtp)
                .await
                .expect("send");
            assert_eq!(
                recv(&caller.rtp).await,
                voice(seq, 2),
                "far packet {seq} in the clear"
            );
        }
        caller
            .rtcp
            .send_to(&REPORT, call.caller_rtcp)
            .await
            .expect("send");
        assert_eq!(far.recv_rtcp().await, REPORT.to_vec());
        let sealed = far.seal_rtcp(&REPORT);
        far.phone
            .rtcp
            .send_to(&sealed, call.far_rtcp)
            .await
            .expect("send");
        assert_eq!(recv(&caller.rtcp).await, REPORT.to_vec());

        let stats = call.relay.stats().await.expect("running");
        assert_eq!(stats.far.received.packets, 50);
        assert_eq!(stats.far.received.rtcp_packets, 1);
        assert_eq!(stats.far.sent.packets, 50);
        assert_eq!(stats.far.srtp, SrtpStats::default());
        // Bytes received count the plain packet (the relay's view).
        assert_eq!(stats.far.received.bytes, 50 * VOICE_LEN as u64);
    }
}

// The mirror: SRTP caller (the carrier), plain far leg (the AI agent).
#[tokio::test]
async fn srtp_caller_and_plain_far_leg_both_ways() {
    let pool = PortPool::new(LOCALHOST, 46600, 46699).expect("valid range");
    let keys = leg_keys(SrtpSuite::AesCm128HmacSha1_80);
    let mut caller = SrtpPhone::new(&keys).await;
    let far = Phone::new().await;
    let call = start_with(
        &pool,
        RelayConfig::default(),
        Spec::srtp(&caller, &keys),
        Spec::plain(&far),
    );
    for seq in 0..50u16 {
        let sealed = caller.seal_rtp(&voice(seq, 3));
        caller
            .phone
            .rtp
            .send_to(&sealed, call.caller_rtp)
            .await
            .expect("send");
        assert_eq!(recv(&far.rtp).await, voice(seq, 3));
        far.rtp
            .send_to(&voice(seq, 4), call.far_rtp)
            .await
            .expect("send");
        assert_eq!(caller.recv_rtp().await, voice(seq, 4));
    }
    let sealed = caller.seal_rtcp(&REPORT);
    caller
        .phone
        .rtcp
        .send_to(&sealed, call.caller_rtcp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtcp).await, REPORT.to_vec());
    far.rtcp
        .send_to(&REPORT, call.far_rtcp)
        .await
        .expect("send");
    assert_eq!(caller.recv_rtcp().await, REPORT.to_vec());
}

// Security (issue 14): on an SRTP leg the latch moves only for an
// authenticated packet. An attacker on the peer's own IP (so allowed to
// latch by address) sends forged SRTP first: nothing is relayed, nothing
// latched, the far side's audio still goes to the real peer; replays of the
// peer's own packets are dropped and counted.
#[tokio::test]
async fn forged_and_replayed_packets_are_neither_relayed_nor_latched() {
    let pool = PortPool::new(LOCALHOST, 46700, 46799).expect("valid range");
    let keys = leg_keys(SrtpSuite::AesCm128HmacSha1_80);
    let mut caller = SrtpPhone::new(&keys).await;
    let far = Phone::new().await;
    let (config, counted) = srtp_counted(RelayConfig::default());
    let call = start_with(&pool, config, Spec::srtp(&caller, &keys), Spec::plain(&far));

    // Same IP as the caller's SDP address, another port: may latch by address.
    let attacker = bind().await;
    let mut forger = SrtpContext::new(&SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80));
    for seq in 0..5u16 {
        let forged = seal_rtp(&mut forger, &voice(seq, 66));
        attacker
            .send_to(&forged, call.caller_rtp)
            .await
            .expect("send");
    }
    // Plain RTP on the SRTP leg is unauthenticated too.
    attacker
        .send_to(&voice(9, 66), call.caller_rtp)
        .await
        .expect("send");
    let mut forged_rtcp = REPORT.to_vec();
    forged_rtcp.extend_from_slice(&[0x80, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    attacker
        .send_to(&forged_rtcp, call.caller_rtcp)
        .await
        .expect("send");
    assert_silent(&far.rtp).await;
    assert_silent(&far.rtcp).await;

    // The far side's audio still goes to the caller's SDP address.
    far.rtp
        .send_to(&voice(0, 2), call.far_rtp)
        .await
        .expect("send");
    assert_eq!(caller.recv_rtp().await, voice(0, 2));
    assert_silent(&attacker).await;

    // The real caller, from its own port, is relayed and latched.
    let first = caller.seal_rtp(&voice(0, 1));
    caller
        .phone
        .rtp
        .send_to(&first, call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtp).await, voice(0, 1));
    // Its packet again (a replay) from its own address: dropped.
    caller
        .phone
        .rtp
        .send_to(&first, call.caller_rtp)
        .await
        .expect("send");
    assert_silent(&far.rtp).await;

    let stats = call.relay.stats().await.expect("running");
    let srtp = stats.caller.srtp;
    assert_eq!(srtp.auth_failures, 7, "5 forged, 1 plain, 1 forged SRTCP");
    assert_eq!(srtp.replays, 1);
    assert_eq!(stats.caller.received.packets, 1);
    assert_eq!(
        stats.caller.received.refused, 0,
        "from an allowed address: not refused"
    );
    assert_eq!(*counted.lock().expect("lock"), srtp, "counted live");
    assert_eq!(
        srtp,
        SrtpStats {
            auth_failures: 7,
            replays: 1,
            ..SrtpStats::default()
        }
    );
}

// After the forged packets the latch is still free: the caller's NAT port
// (a new source on its IP) latches with its first authentic packet, and
// the reply goes there, not to the attacker who spoke first.
#[tokio::test]
async fn a_forger_speaking_first_does_not_take_the_latch() {
    let pool = PortPool::new(LOCALHOST, 46800, 46899).expect("valid range");
    let keys = leg_keys(SrtpSuite::AesCm128HmacSha1_32);
    let mut caller = SrtpPhone::new(&keys).await;
    let far = Phone::new().await;
    let call = start_with(
        &pool,
        RelayConfig::default(),
        Spec::srtp(&caller, &keys),
        Spec::plain(&far),
    );
    let attacker = bind().await;
    let mut forger = SrtpContext::new(&SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_32));
    attacker
        .send_to(&seal_rtp(&mut forger, &voice(0, 66)), call.caller_rtp)
        .await
        .expect("send");
    // The caller behind NAT: its packets come from another port than its SDP's.
    let natted = bind().await;
    natted
        .send_to(&caller.seal_rtp(&voice(1, 1)), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far.rtp).await, voice(1, 1));
    far.rtp
        .send_to(&voice(5, 2), call.far_rtp)
        .await
        .expect("send");
    let mut back = recv(&natted).await;
    let n = caller.open.unprotect_rtp(&mut back).expect("authentic");
    back.truncate(n);
    assert_eq!(back, voice(5, 2));
    assert_silent(&attacker).await;
}

// set_srtp mid-stream: a plain far leg becomes SRTP (a re-INVITE added
// a=crypto), then its key changes, then it goes back to plain; the caller's
// side is untouched throughout.
#[tokio::test]
async fn set_srtp_switches_keys_mid_stream() {
    let pool = PortPool::new(LOCALHOST, 46900, 46999).expect("valid range");
    let caller = Phone::new().await;
    let first = leg_keys(SrtpSuite::AesCm128HmacSha1_80);
    let mut far = SrtpPhone::new(&first).await;
    let call = start_with(
        &pool,
        RelayConfig::default(),
        Spec::plain(&caller),
        Spec::plain(&far.phone),
    );
    far.phone
        .rtp
        .send_to(&voice(0, 2), call.far_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&caller.rtp).await, voice(0, 2));

    call.relay
        .set_srtp(Side::Far, Some(first.clone()))
        .expect("running");
    // Plain from the far side is now refused; SRTP passes.
    far.phone
        .rtp
        .send_to(&voice(1, 2), call.far_rtp)
        .await
        .expect("send");
    assert_silent(&caller.rtp).await;
    let sealed = far.seal_rtp(&voice(2, 2));
    far.phone
        .rtp
        .send_to(&sealed, call.far_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&caller.rtp).await, voice(2, 2));
    caller
        .rtp
        .send_to(&voice(0, 1), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(far.recv_rtp().await, voice(0, 1));

    // A new key: new contexts; the old key's packets fail.
    let second = leg_keys(SrtpSuite::AesCm128HmacSha1_32);
    call.relay
        .set_srtp(Side::Far, Some(second.clone()))
        .expect("running");
    let stale = far.seal_rtp(&voice(3, 2));
    far.phone
        .rtp
        .send_to(&stale, call.far_rtp)
        .await
        .expect("send");
    assert_silent(&caller.rtp).await;
    let mut far2 = SrtpPhone {
        phone: far.phone,
        seal: SrtpContext::new(&second.receive),
        open: SrtpContext::new(&second.send),
    };
    let sealed = far2.seal_rtp(&voice(4, 2));
    far2.phone
        .rtp
        .send_to(&sealed, call.far_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&caller.rtp).await, voice(4, 2));
    caller
        .rtp
        .send_to(&voice(1, 1), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(far2.recv_rtp().await, voice(1, 1));

    // Back to plain.
    call.relay.set_srtp(Side::Far, None).expect("running");
    far2.phone
        .rtp
        .send_to(&voice(5, 2), call.far_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&caller.rtp).await, voice(5, 2));
    caller
        .rtp
        .send_to(&voice(2, 1), call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&far2.phone.rtp).await, voice(2, 1));

    let stats = call.relay.stats().await.expect("running");
    assert_eq!(
        stats.far.srtp.auth_failures, 2,
        "the plain one and the stale-key one"
    );
    assert_eq!(stats.caller.srtp, SrtpStats::default());
}

// A transfer to an SRTP target: the new far leg gets its own contexts, the
// SRTP caller's keep their state (its replay window still refuses a packet
// it saw before the switch).
#[tokio::test]
async fn switch_far_to_an_srtp_leg_keeps_the_callers_contexts() {
    let pool = PortPool::new(LOCALHOST, 48000, 48099).expect("valid range");
    let caller_keys = leg_keys(SrtpSuite::AesCm128HmacSha1_80);
    let mut caller = SrtpPhone::new(&caller_keys).await;
    let ai = Phone::new().await;
    let call = start_with(
        &pool,
        RelayConfig::default(),
        Spec::srtp(&caller, &caller_keys),
        Spec::plain(&ai),
    );
    let before = caller.seal_rtp(&voice(0, 1));
    caller
        .phone
        .rtp
        .send_to(&before, call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(recv(&ai.rtp).await, voice(0, 1));

    let target_keys = leg_keys(SrtpSuite::AesCm128HmacSha1_32);
    let mut target = SrtpPhone::new(&target_keys).await;
    let ports = pool.allocate().expect("ports");
    let (target_rtp, _) = (ports.rtp_addr(), ports.rtcp_addr());
    let done = call
        .relay
        .switch_far(Spec::srtp(&target, &target_keys).leg(ports))
        .expect("switch");
    timeout(WAIT, done)
        .await
        .expect("in time")
        .expect("old stats");

    // The replayed pre-switch packet is still a replay.
    caller
        .phone
        .rtp
        .send_to(&before, call.caller_rtp)
        .await
        .expect("send");
    assert_silent(&target.phone.rtp).await;
    let next = caller.seal_rtp(&voice(1, 1));
    caller
        .phone
        .rtp
        .send_to(&next, call.caller_rtp)
        .await
        .expect("send");
    assert_eq!(target.recv_rtp().await, voice(1, 1));
    let sealed = target.seal_rtp(&voice(0, 7));
    target
        .phone
        .rtp
        .send_to(&sealed, target_rtp)
        .await
        .expect("send");
    assert_eq!(caller.recv_rtp().await, voice(0, 7));

    let stats = call.relay.stats().await.expect("running");
    assert_eq!(stats.caller.srtp.replays, 1);
    assert_eq!(stats.far.srtp, SrtpStats::default());
}
