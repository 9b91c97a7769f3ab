//! Rewriting for the relay, hold and resume, codec filtering.

use super::*;

#[test]
fn offer_rewrite_points_ports_connection_and_rtcp_at_relay() {
    let sdp = parse(WEBRTC_OFFER);
    let out = rewrite(&sdp, &relay("10.0.0.5", &[30000]), None);
    let s = out.streams().next().expect("one stream");
    assert_eq!(out.connection().map(|c| c.address()), Some(ip("10.0.0.5")));
    assert_eq!(s.connection_address(), Some(ip("10.0.0.5")));
    assert_eq!(s.port(), 30000);
    assert_eq!(s.rtcp_port(), Some(30001));
    assert_eq!(s.rtcp_address(), Some(ip("10.0.0.5")));
    assert!(text(&out).contains("a=rtcp:30001 IN IP4 10.0.0.5\r\n"));
    assert_eq!(out.origin().address(), "10.0.0.5");
    assert!(!text(&out).contains("203.0.113.7"));
    // First SDP on this leg: the source's version, nothing to bump from.
    assert_eq!(out.origin().version(), 2);
}

#[test]
fn answer_rewrite_keeps_leg_origin_and_bumps_version_by_one() {
    let first = rewrite(&parse(SIPP_UAC), &relay("10.0.0.5", &[30000]), None);
    let answer = parse(TWILIO_ANSWER);
    let out = rewrite(&answer, &relay("10.0.0.5", &[30002]), Some(&first));
    assert_eq!(out.origin().username(), "user1");
    assert_eq!(out.origin().session_id(), "53655765");
    assert_eq!(out.origin().version(), 2353687638);
    assert_eq!(out.streams().next().map(|s| s.port()), Some(30002));
    assert!(text(&out).starts_with("v=0\r\no=user1 53655765 2353687638 IN IP4 10.0.0.5\r\n"));
}

#[test]
fn unchanged_sdp_keeps_the_same_origin_version() {
    let r = relay("10.0.0.5", &[30000]);
    let first = rewrite(&parse(SIPP_UAC), &r, None);
    let refresh = rewrite(&parse(SIPP_UAC), &r, Some(&first));
    assert_eq!(refresh, first);
}

#[test]
fn ice_and_dtls_attributes_dropped_codec_lines_kept() {
    let out = rewrite(&parse(WEBRTC_OFFER), &relay("10.0.0.5", &[30000]), None);
    let names = attr_names(&out.media()[0]);
    for gone in [
        "candidate",
        "end-of-candidates",
        "ice-ufrag",
        "ice-pwd",
        "fingerprint",
        "setup",
        "rtcp-mux",
    ] {
        assert!(!names.contains(&gone), "{gone} should be dropped");
    }
    for kept in [
        "rtcp", "mid", "sendrecv", "rtpmap", "rtcp-fb", "fmtp", "ptime", "maxptime",
    ] {
        assert!(names.contains(&kept), "{kept} should be kept");
    }
    let session: Vec<_> = out.attributes().iter().map(Attribute::name).collect();
    assert_eq!(session, ["msid-semantic"]);
    assert_eq!(out.media()[0].formats(), ["111", "9", "0", "8", "101"]);
}

#[test]
fn sdes_crypto_passes_through_the_relay() {
    let offer = SIPP_UAC.replace(
        "RTP/AVP 0\r\n",
        "RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
    );
    let out = rewrite(&parse(&offer), &relay("10.0.0.5", &[30000]), None);
    assert!(attr_names(&out.media()[0]).contains(&"crypto"));
}

#[test]
fn hold_then_resume_detected_against_previous_offer() {
    let active = parse(SIPP_UAC);
    let held = parse(&SIPP_UAC.replace("PCMU/8000\r\n", "PCMU/8000\r\na=inactive\r\n"));
    assert_eq!(hold_change(None, &active), HoldChange::Unchanged);
    assert_eq!(hold_change(Some(&active), &held), HoldChange::Hold);
    assert_eq!(hold_change(Some(&held), &held), HoldChange::Unchanged);
    assert_eq!(hold_change(Some(&held), &active), HoldChange::Resume);
}

#[test]
fn hold_rewrite_keeps_direction_and_bumps_version() {
    let r = relay("10.0.0.5", &[30000]);
    let first = rewrite(&parse(SIPP_UAC), &r, None);
    let held = parse(&SIPP_UAC.replace("PCMU/8000\r\n", "PCMU/8000\r\na=sendonly\r\n"));
    let out = rewrite(&held, &r, Some(&first));
    assert_eq!(out.origin().version(), first.origin().version() + 1);
    assert_eq!(
        out.streams().next().map(|s| s.direction()),
        Some(Direction::SendOnly)
    );
}

#[test]
fn answer_direction_follows_rfc3264_6_1() {
    assert_eq!(answer_direction(Direction::SendOnly), Direction::RecvOnly);
    assert_eq!(answer_direction(Direction::RecvOnly), Direction::SendOnly);
    assert_eq!(answer_direction(Direction::Inactive), Direction::Inactive);
    assert_eq!(answer_direction(Direction::SendRecv), Direction::SendRecv);
}

#[test]
fn two_mlines_rejected_stream_stays_zero() {
    let sdp = parse(TWO_STREAMS);
    let out = rewrite(&sdp, &relay("10.0.0.5", &[30000, 30002]), None);
    let ports: Vec<_> = out.streams().map(|s| s.port()).collect();
    assert_eq!(ports, [30000, 0]);
    assert_eq!(out.streams().nth(1).and_then(|s| s.rtcp_port()), None);
    assert!(!text(&out).contains("198.51.100"));
}

#[test]
fn port_count_mismatch_is_a_rewrite_error() {
    let e = rewrite_for_relay(&parse(TWO_STREAMS), &relay("10.0.0.5", &[30000]), None);
    assert_eq!(
        e,
        Err(RewriteError::PortCountMismatch { media: 2, ports: 1 })
    );
}

#[test]
fn codec_filter_keeps_g711_and_dtmf_from_opus_pcmu_g722_offer() {
    let sdp = parse(WEBRTC_OFFER);
    let out = filter_codecs(&sdp, &["PCMU", "PCMA", "telephone-event"]).expect("G.711 offered");
    let m = &out.media()[0];
    assert_eq!(m.formats(), ["0", "8", "101"]);
    let t = text(&out);
    for gone in ["opus", "G722", "a=fmtp:111", "a=rtcp-fb:111"] {
        assert!(!t.contains(gone), "{gone} should be gone");
    }
    for kept in [
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
    ] {
        assert!(t.contains(kept), "{kept} should stay");
    }
}

#[test]
fn codec_filter_matches_names_case_insensitively() {
    let out = filter_codecs(&parse(TWILIO_ANSWER), &["pcmu", "TELEPHONE-EVENT"]).expect("PCMU");
    assert_eq!(out, parse(TWILIO_ANSWER));
}

#[test]
fn codec_filter_opus_only_has_no_common_codec() {
    let opus_only = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
        m=audio 5004 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\n\
        a=rtpmap:101 telephone-event/48000\r\n";
    let e = filter_codecs(&parse(opus_only), &["PCMU", "PCMA", "telephone-event"]);
    assert_eq!(e, Err(FilterError::NoCommonCodec { media_index: 0 }));
    let sdp_error = SdpError::from(FilterError::NoCommonCodec { media_index: 0 });
    assert_eq!(
        (sdp_error.status(), sdp_error.reason()),
        (488, "No common codec")
    );
}

#[test]
fn codec_filter_leaves_video_and_rejected_streams_alone() {
    let sdp = parse(TWO_STREAMS);
    let out = filter_codecs(&sdp, &["PCMA"]).expect("PCMA offered");
    assert_eq!(out.media()[0].formats(), ["8"]);
    assert_eq!(out.media()[1], sdp.media()[1]);
}
