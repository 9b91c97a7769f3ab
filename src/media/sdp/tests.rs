use std::net::IpAddr;

use super::*;

mod relay;

/// SIPp's built-in uac scenario offer (PCMU only), with CRLF as on the wire.
const SIPP_UAC: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// A browser offer: ICE, DTLS, rtcp-mux, BUNDLE, Opus first.
const WEBRTC_OFFER: &str = "v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=ice-options:trickle
a=msid-semantic: WMS
m=audio 54400 UDP/TLS/RTP/SAVPF 111 9 0 8 101
c=IN IP4 203.0.113.7
a=rtcp:54401 IN IP4 203.0.113.7
a=candidate:1 1 udp 2122260223 192.168.1.20 54400 typ host generation 0
a=candidate:2 1 udp 1686052607 203.0.113.7 54400 typ srflx raddr 192.168.1.20 rport 54400
a=end-of-candidates
a=ice-ufrag:F7gI
a=ice-pwd:x9cml/YzichV2+XlhiMu8gEU
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F
a=setup:actpass
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:60
";

/// What a Twilio/Zendesk media gateway answers: G.711 and DTMF only.
const TWILIO_ANSWER: &str = "v=0\r\n\
o=root 1587512345 1587512345 IN IP4 168.86.128.20\r\n\
s=Twilio Media Gateway\r\n\
c=IN IP4 168.86.128.20\r\n\
t=0 0\r\n\
m=audio 18200 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n";

/// Audio and video, c= only per m= line, video rejected with port 0.
const TWO_STREAMS: &str = "v=0
o=alice 2890844526 2890844527 IN IP4 198.51.100.1
s=-
t=0 0
a=sendrecv
m=audio 49170 RTP/AVP 0 8 97
c=IN IP4 198.51.100.1
a=rtpmap:97 iLBC/8000
m=video 0 RTP/AVP 31
c=IN IP4 198.51.100.2
a=rtcp:51373 IN IP4 198.51.100.2
";

fn parse(s: &str) -> SessionDescription {
    match SessionDescription::parse(s.as_bytes()) {
        Ok(sdp) => sdp,
        Err(e) => panic!("fixture must parse: {e}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn relay(addr: &str, ports: &[u16]) -> RelayAddrs {
    RelayAddrs {
        ip: ip(addr),
        ports: ports.to_vec(),
    }
}

fn rewrite(
    sdp: &SessionDescription,
    r: &RelayAddrs,
    prev: Option<&SessionDescription>,
) -> SessionDescription {
    rewrite_for_relay(sdp, r, prev).expect("ports match m= lines")
}

fn attr_names(m: &MediaDescription) -> Vec<&str> {
    m.attributes().iter().map(Attribute::name).collect()
}

fn text(sdp: &SessionDescription) -> String {
    String::from_utf8(sdp.to_bytes()).expect("to_bytes is UTF-8")
}

fn err(input: &[u8]) -> ParseError {
    match SessionDescription::parse(input) {
        Ok(sdp) => panic!("expected an error, parsed {sdp:?}"),
        Err(e) => e,
    }
}

#[test]
fn sipp_offer_parses_with_session_connection_and_static_pcmu() {
    let sdp = parse(SIPP_UAC);
    assert_eq!(sdp.origin().version(), 2353687637);
    let s = sdp.streams().next().expect("one stream");
    assert_eq!(s.connection_address(), Some(ip("127.0.0.1")));
    assert_eq!(s.port(), 6000);
    assert_eq!(s.rtcp_port(), Some(6001));
    assert_eq!(s.direction(), Direction::SendRecv);
    assert!(!s.is_hold());
    let pts = s.payload_types();
    assert_eq!(pts.len(), 1);
    assert_eq!(
        (pts[0].number(), pts[0].name(), pts[0].clock_rate()),
        (0, Some("PCMU"), Some(8000))
    );
}

#[test]
fn static_payload_types_without_rtpmap_get_rfc3551_names() {
    let sdp = parse(TWO_STREAMS);
    let names: Vec<_> = sdp.media()[0]
        .payload_types()
        .iter()
        .map(|p| p.name().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        [
            Some("PCMU".into()),
            Some("PCMA".into()),
            Some("iLBC".into())
        ]
    );
    assert_eq!(sdp.media()[1].payload_types()[0].name(), Some("H261"));
}

#[test]
fn webrtc_offer_parses_rtcp_attribute_and_opus_channels() {
    let sdp = parse(WEBRTC_OFFER);
    let s = sdp.streams().next().expect("one stream");
    assert_eq!(s.rtcp_port(), Some(54401));
    assert_eq!(s.rtcp_address(), Some(ip("203.0.113.7")));
    let opus = &s.payload_types()[0];
    assert_eq!(
        (opus.name(), opus.clock_rate(), opus.channels()),
        (Some("opus"), Some(48000), Some(2))
    );
}

#[test]
fn hold_by_sendonly_and_by_zero_address() {
    let sendonly = parse(&SIPP_UAC.replace("PCMU/8000\r\n", "PCMU/8000\r\na=sendonly\r\n"));
    assert!(sendonly.is_hold());
    assert_eq!(
        sendonly.streams().next().map(|s| s.direction()),
        Some(Direction::SendOnly)
    );
    let zero = parse(&SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"));
    assert!(zero.is_hold());
    let inactive_session = parse(&SIPP_UAC.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n"));
    assert!(inactive_session.is_hold());
    assert!(!parse(SIPP_UAC).is_hold());
}

#[test]
fn media_direction_overrides_session_direction() {
    let sdp = parse(&(SIPP_UAC.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n") + "a=sendrecv\r\n"));
    assert_eq!(sdp.direction(), Direction::SendOnly);
    assert!(!sdp.is_hold());
}

#[test]
fn ipv6_connection_parses_and_ipv4_rewrites_to_ipv6() {
    let v6 = parse(&SIPP_UAC.replace("IN IP4 127.0.0.1", "IN IP6 ::1"));
    assert_eq!(
        v6.streams().next().and_then(|s| s.connection_address()),
        Some(ip("::1"))
    );
    let out = rewrite(&parse(SIPP_UAC), &relay("2001:db8::5", &[30000]), None);
    let t = text(&out);
    assert!(t.contains("c=IN IP6 2001:db8::5\r\n"));
    assert!(t.contains("o=user1 53655765 2353687637 IN IP6 2001:db8::5\r\n"));
    assert_eq!(SessionDescription::parse(t.as_bytes()), Ok(out));
}

#[test]
fn address_family_mismatch_is_bad_connection() {
    let e = err(SIPP_UAC
        .replace("IN IP4 127.0.0.1\r\nt", "IN IP6 127.0.0.1\r\nt")
        .as_bytes());
    assert_eq!(e, ParseError::BadConnection { line: 4 });
}

#[test]
fn connection_only_per_media_is_accepted() {
    let sdp = parse(TWO_STREAMS);
    assert_eq!(sdp.connection(), None);
    let addrs: Vec<_> = sdp.streams().map(|s| s.connection_address()).collect();
    assert_eq!(addrs, [Some(ip("198.51.100.1")), Some(ip("198.51.100.2"))]);
}

#[test]
fn no_connection_anywhere_is_an_error() {
    let e = err(SIPP_UAC.replace("c=IN IP4 127.0.0.1\r\n", "").as_bytes());
    assert_eq!(e, ParseError::NoConnectionAddress { media_index: 0 });
    assert_eq!(SdpError::from(e).reason(), "No SDP connection address");
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    assert_eq!(err(b""), ParseError::Empty);
    assert_eq!(err(b"\r\n\r\n"), ParseError::Empty);
    assert_eq!(err(b"v=0"), ParseError::MissingOrigin);
    assert_eq!(err(b"v=0\r\n"), ParseError::MissingOrigin);
    assert_eq!(err(&[0xff, 0xfe, 0x00, 0x9f]), ParseError::NotUtf8);
    assert_eq!(
        err(b"v=0\r\no\0=x"),
        ParseError::ControlCharacter { line: 2 }
    );
    assert_eq!(err(b"hello world"), ParseError::MissingEquals { line: 1 });
    assert_eq!(
        err(b"o=- 1 1 IN IP4 1.2.3.4\r\n"),
        ParseError::MissingVersion
    );
    assert_eq!(err(b"v=1\r\n"), ParseError::UnsupportedVersion { line: 1 });
    assert_eq!(
        err(b"v=0\r\nX=1\r\n"),
        ParseError::MalformedLine { line: 2 }
    );
    assert_eq!(
        err(b"v=0\r\nx=1\r\n"),
        ParseError::UnknownLine { line: 2, kind: 'x' }
    );
    // Every prefix and a few byte flips of real SDPs: errors or values, no panic.
    for fixture in [SIPP_UAC, WEBRTC_OFFER, TWILIO_ANSWER, TWO_STREAMS] {
        let bytes = fixture.as_bytes();
        for end in 0..bytes.len() {
            let _ = SessionDescription::parse(&bytes[..end]);
            let mut flipped = bytes.to_vec();
            flipped[end] ^= 0x20;
            let _ = SessionDescription::parse(&flipped);
        }
    }
}

#[test]
fn required_lines_missing_or_after_media_are_named() {
    let no_t = SIPP_UAC.replace("t=0 0\r\n", "");
    assert_eq!(
        err(no_t.as_bytes()),
        ParseError::MediaBeforeRequired {
            line: 5,
            missing: 't'
        }
    );
    assert_eq!(
        err(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nt=0 0\r\n"),
        ParseError::MissingSessionName
    );
    assert_eq!(
        err(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n"),
        ParseError::MissingTiming
    );
    let s_in_media = SIPP_UAC.to_owned() + "s=again\r\n";
    assert_eq!(
        err(s_in_media.as_bytes()),
        ParseError::MisplacedLine { line: 8, kind: 's' }
    );
    let two_o = SIPP_UAC.replace("s=-", "o=- 1 1 IN IP4 1.2.3.4\r\ns=-");
    assert_eq!(
        err(two_o.as_bytes()),
        ParseError::DuplicateLine { line: 3, kind: 'o' }
    );
}

#[test]
fn bad_ports_and_media_lines_are_refused() {
    for (m, want) in [
        ("m=audio 70000 RTP/AVP 0", ParseError::BadPort { line: 6 }),
        ("m=audio x RTP/AVP 0", ParseError::BadPort { line: 6 }),
        ("m=audio 6000/0 RTP/AVP 0", ParseError::BadPort { line: 6 }),
        ("m=audio 6000 RTP/AVP", ParseError::BadMedia { line: 6 }),
    ] {
        let sdp = SIPP_UAC.replace("m=audio 6000 RTP/AVP 0", m);
        assert_eq!(err(sdp.as_bytes()), want, "{m}");
    }
    let counted = parse(&SIPP_UAC.replace("6000 RTP", "6000/2 RTP"));
    assert!(text(&counted).contains("m=audio 6000/2 RTP/AVP 0\r\n"));
    let out = rewrite(&counted, &relay("10.0.0.5", &[30000]), None);
    assert!(text(&out).contains("m=audio 30000 RTP/AVP 0\r\n"));
}

#[test]
fn oversize_and_too_many_media_are_refused() {
    let big = SIPP_UAC.to_owned() + &"a=x\r\n".repeat(MAX_SDP_BYTES / 5);
    assert!(matches!(err(big.as_bytes()), ParseError::TooLarge { .. }));
    let many = SIPP_UAC.to_owned() + &"m=audio 0 RTP/AVP 0\r\n".repeat(MAX_MEDIA);
    assert_eq!(err(many.as_bytes()), ParseError::TooManyMedia);
    let max = SIPP_UAC.to_owned() + &"m=audio 0 RTP/AVP 0\r\n".repeat(MAX_MEDIA - 1);
    assert_eq!(parse(&max).media().len(), MAX_MEDIA);
}

#[test]
fn round_trip_parse_to_bytes_is_identity() {
    let full = "v=0\no=- 1 2 IN IP4 192.0.2.1\ns=Call\ni=info\nu=http://example.com/\n\
        e=ops@example.com\np=+1 555 0100\nc=IN IP4 192.0.2.1\nb=AS:64\nt=0 0\nr=7d 1h 0 25h\n\
        z=2882844526 -1h\nk=prompt\na=tool:x\nm=audio 5004/2 RTP/AVP 0\ni=voice\nb=TIAS:64000\n\
        k=clear:abc\na=ptime:20\n";
    for fixture in [SIPP_UAC, WEBRTC_OFFER, TWILIO_ANSWER, TWO_STREAMS, full] {
        let sdp = parse(fixture);
        let bytes = sdp.to_bytes();
        assert_eq!(SessionDescription::parse(&bytes).as_ref(), Ok(&sdp));
        assert!(
            !bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "CRLF only"
        );
    }
    assert_eq!(parse(SIPP_UAC).to_bytes(), SIPP_UAC.as_bytes());
    assert_eq!(parse(TWILIO_ANSWER).to_bytes(), TWILIO_ANSWER.as_bytes());
}

#[test]
fn every_parse_error_has_a_header_safe_reason() {
    for e in [
        err(b""),
        err(&[0xff]),
        err(b"v=0"),
        err(b"junk"),
        ParseError::TooManyMedia,
        ParseError::BadOrigin { line: 2 },
    ] {
        let reason = SdpError::from(e).reason();
        assert!(!reason.is_empty() && reason.chars().all(|c| c.is_ascii_graphic() || c == ' '));
    }
}

#[test]
fn audio_stream_skips_video_and_rejected_lines() {
    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
         m=audio 0 RTP/AVP 0\r\n\
         m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    assert_eq!(audio_stream(&sdp), Some(2));
    assert_eq!(codec_names(&sdp, 2), vec!["PCMA", "telephone-event"]);
    assert!(codec_names(&sdp, 9).is_empty());
    let only = only_stream(&sdp, 2);
    let ports: Vec<u16> = only.media().iter().map(|m| m.port()).collect();
    assert_eq!(ports, vec![0, 0, 6000]);
    // The rejected lines stay, so an answer still lines up with the offer.
    assert_eq!(only.media().len(), 3);
    let video_only = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=video 5004 RTP/AVP 96\r\n",
    );
    assert_eq!(audio_stream(&video_only), None);
}
