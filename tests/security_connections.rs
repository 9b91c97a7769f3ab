//! Connection exhaustion (issue 12, item 3): thousands of idle connections from one
//! source, a slowloris HTTP client and a SIP/TCP peer dribbling one byte at a time
//! must not take the sidecar, SIP or new calls away from everyone else.

mod common;

use common::conns::{
    connect_from, count_open, dribble_until_closed, flood, flood_size, http_client_from, is_open,
    raise_nofile, send_and_wait,
};
use common::scenarios::{establish, session};
use common::{bounded, InviteOpts, Rig, Transport};
use handoff::config::{Secret, SigningKey};
use handoff::http::auth::mint_prefetch_token;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the attacker's connections come from.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66));
/// Where everyone else's come from.
const HONEST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

const SECRET: &str = "conns-signing-secret-0123456789abcdef";
const ISSUER: &str = "handoff-conns-test";
const ORG: &str = "org-test";

fn keys() -> String {
    format!(
        "http.signing_keys = [{{ kid = \"k\", secret = \"{SECRET}\", issuer = \"{ISSUER}\" }}]\n"
    )
}

fn token() -> String {
    let key = SigningKey {
        kid: "k".into(),
        secret: Secret::new(SECRET),
        issuer: ISSUER.into(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    mint_prefetch_token(&key, ORG, now, None).expect("mint")
}

async fn run(f: impl std::future::Future<Output = ()>) {
    bounded(Duration::from_secs(28), f).await;
}

/// Caps far below any flood size the descriptor limit allows, so the test means the
/// same at `ulimit -n 1024` as at a million.
const PER_IP: usize = 40;
const TOTAL: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_floods_from_one_source_leave_healthz_webhooks_and_new_calls_working() {
    let nofile = raise_nofile();
    let n = flood_size(2000, nofile, 2);
    assert!(
        n >= 3 * PER_IP,
        "descriptor limit {nofile} leaves only {n} connections per flood"
    );
    run(async {
        let extra = format!(
            "{}http.max_connections = {TOTAL}\nhttp.max_connections_per_ip = {PER_IP}\n\
             sip.tcp_max_connections = {TOTAL}\nsip.tcp_max_connections_per_ip = {PER_IP}\n\
             limits.max_calls = 10\n",
            keys()
        );
        let mut rig = Rig::new(Transport::Udp, &extra).await;
        let http_addr = rig.server.http_addr();
        let sip_addr = rig.server.tcp_addrs()[0];

        let http_flood = flood(ATTACKER, http_addr, n).await;
        let sip_flood = flood(ATTACKER, sip_addr, n).await;
        assert!(http_flood.len() > 2 * PER_IP && sip_flood.len() > 2 * PER_IP);
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The source holds at most its cap; everything past it was closed at once.
        let http_open = count_open(&http_flood);
        let sip_open = count_open(&sip_flood);
        assert!(
            http_open <= PER_IP,
            "{http_open} of {} idle HTTP connections from one source still open",
            http_flood.len()
        );
        assert!(
            sip_open <= PER_IP,
            "{sip_open} of {} idle SIP/TCP connections from one source still open",
            sip_flood.len()
        );
        let m = rig.server.metrics();
        assert!(
            m.http_connections_refused_total.load(Ordering::Relaxed)
                >= (http_flood.len() - PER_IP) as u64
        );
        let sip_turned_away = m.sip_tcp_connections_refused_total.load(Ordering::Relaxed)
            + m.sip_tcp_connections_evicted_total.load(Ordering::Relaxed);
        assert!(sip_turned_away >= (sip_flood.len() - PER_IP) as u64);

        // Everyone else is still served: health, a new call, its webhook, SIP/TCP.
        let client = http_client_from(HONEST);
        let health = client
            .get(format!("http://{http_addr}/healthz"))
            .send()
            .await
            .expect("/healthz answers during the flood");
        assert_eq!(health.status().as_u16(), 200);

        let call = establish(&mut rig, InviteOpts::default()).await;
        let resp = client
            .post(format!(
                "http://{http_addr}/backend/zendesk-v2/voice-prefetch/{}",
                token()
            ))
            .header("content-type", "application/json")
            .body(r#"{"ticket_id": 4242, "caller_phone": "+14155551212"}"#)
            .send()
            .await
            .expect("the webhook answers during the flood");
        assert_eq!(resp.status().as_u16(), 200);
        let v: Value = resp.json().await.expect("JSON");
        assert_eq!(v["success"], true, "{v}");
        assert_eq!(
            session(&rig.server, &call.session_id).zendesk_ticket_id,
            Some(4242)
        );
        let honest_sip = connect_from(HONEST, sip_addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            is_open(&honest_sip),
            "another source's SIP/TCP connection is refused"
        );
        drop((http_flood, sip_flood));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_http_headers_are_cut_off_at_the_header_timeout() {
    run(async {
        let rig = Rig::new(Transport::Udp, "http.header_timeout_ms = 1000\n").await;
        let addr = rig.server.http_addr();
        // Header lines dribbled a byte every 200 ms: bytes do not buy time.
        let c = connect_from(ATTACKER, addr).await.expect("connect");
        let head = b"GET /healthz HTTP/1.1\r\nHost: handoff\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let (closed, _) = dribble_until_closed(
            c,
            b"",
            head,
            Duration::from_millis(200),
            Duration::from_secs(8),
        )
        .await;
        let closed = closed.expect("a dribbled header block is still open after 8 s");
        assert!(
            (Duration::from_millis(800)..Duration::from_millis(5000)).contains(&closed),
            "closed after {closed:?}, header timeout 1 s"
        );
        // A connection that sends nothing at all goes the same way.
        let idle = connect_from(ATTACKER, addr).await.expect("connect");
        let (closed, _) = send_and_wait(idle, b"", Duration::from_secs(8)).await;
        assert!(
            closed.is_some_and(|d| d < Duration::from_secs(5)),
            "an idle connection lives on: {closed:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_at_the_body_deadline_and_the_request_timeout() {
    run(async {
        let extra = format!(
            "{}http.body_timeout_ms = 700\nhttp.request_timeout_ms = 1500\n",
            keys()
        );
        let rig = Rig::new(Transport::Udp, &extra).await;
        let addr = rig.server.http_addr();
        let head = format!(
            "POST /backend/zendesk-v2/voice-prefetch/{} HTTP/1.1\r\nHost: h\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"ticket_id\"",
            token()
        );
        // Part of the body, then silence: the body deadline answers.
        let c = connect_from(HONEST, addr).await.expect("connect");
        let (closed, said) = send_and_wait(c, head.as_bytes(), Duration::from_secs(8)).await;
        assert!(said.starts_with("HTTP/1.1 408"), "{said}");
        assert!(said.contains("body not received in time"), "{said}");
        assert!(
            closed.is_some_and(|d| d < Duration::from_secs(5)),
            "{closed:?}"
        );

        // A byte every 300 ms keeps the body deadline away; the request timeout does not move.
        let c = connect_from(HONEST, addr).await.expect("connect");
        let (closed, said) = dribble_until_closed(
            c,
            head.as_bytes(),
            &[b' '; 100],
            Duration::from_millis(300),
            Duration::from_secs(8),
        )
        .await;
        assert!(said.starts_with("HTTP/1.1 408"), "{said}");
        assert!(
            said.contains("application/json") && said.contains("request not completed in time"),
            "{said}"
        );
        let closed = closed.expect("closed after the 408");
        assert!(
            (Duration::from_millis(1400)..Duration::from_millis(5000)).contains(&closed),
            "408 and close after {closed:?}, request timeout 1.5 s"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_get_503_at_once() {
    run(async {
        let extra = format!(
            "{}http.max_concurrent_requests = 2\nhttp.body_timeout_ms = 5000\n",
            keys()
        );
        let rig = Rig::new(Transport::Udp, &extra).await;
        let addr = rig.server.http_addr();
        let head = format!(
            "POST /backend/zendesk-v2/voice-prefetch/{} HTTP/1.1\r\nHost: h\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{",
            token()
        );
        // Two requests waiting for their bodies hold both places.
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut c = connect_from(ATTACKER, addr).await.expect("connect");
            tokio::io::AsyncWriteExt::write_all(&mut c, head.as_bytes())
                .await
                .expect("write");
            slow.push(c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let resp = http_client_from(HONEST)
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect("an answer, not a queue");
        assert_eq!(resp.status().as_u16(), 503);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "503 not at once"
        );
        assert_eq!(
            resp.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let v: Value = resp.json().await.expect("a JSON error");
        assert!(v["error"].as_str().is_some(), "{v}");
        assert_eq!(
            rig.server
                .metrics()
                .http_requests_shed_total
                .load(Ordering::Relaxed),
            1
        );
        drop(slow);
        // The places come back with the requests gone.
        let mut ok = false;
        for _ in 0..20 {
            let r = http_client_from(HONEST)
                .get(format!("http://{addr}/healthz"))
                .send()
                .await
                .expect("answer");
            if r.status().as_u16() == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "/healthz never recovered");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_tcp_dribbling_one_byte_at_a_time_is_closed_at_the_message_deadline() {
    run(async {
        let rig = Rig::new(Transport::Udp, "sip.tcp_message_timeout_ms = 1000\n").await;
        let addr = rig.server.tcp_addrs()[0];
        let c = connect_from(ATTACKER, addr).await.expect("connect");
        let msg = "OPTIONS sip:handoff@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.66:5060;branch=z9hG4bKdribble\r\nMax-Forwards: 70\r\nTo: <sip:handoff@127.0.0.1>\r\nFrom: <sip:a@127.0.0.66>;tag=1\r\nCall-ID: dribble\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let (closed, _) = dribble_until_closed(
            c,
            b"",
            msg.as_bytes(),
            Duration::from_millis(200),
            Duration::from_secs(8),
        )
        .await;
        let closed = closed.expect("a dribbling SIP/TCP connection is open after 8 s");
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(5000)).contains(&closed),
            "closed after {closed:?}, message deadline 1 s"
        );
        assert_eq!(
            rig.server
                .metrics()
                .sip_tcp_message_timeouts_total
                .load(Ordering::Relaxed),
            1
        );

        // A whole message, then quiet: the deadline is for messages, not for idleness.
        let c = connect_from(HONEST, addr).await.expect("connect");
        let (closed, said) =
            send_and_wait(c, msg.as_bytes(), Duration::from_millis(2500)).await;
        assert!(closed.is_none(), "closed after a whole message: {said}");
        assert!(said.starts_with("SIP/2.0 "), "no answer: {said:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_sip_tcp_cap_an_idle_connection_gives_way_else_the_new_one_is_refused() {
    run(async {
        let extra = "sip.tcp_max_connections = 100\nsip.tcp_max_connections_per_ip = 3\n";
        let rig = Rig::new(Transport::Udp, extra).await;
        let addr = rig.server.tcp_addrs()[0];
        let old = flood(ATTACKER, addr, 3).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(count_open(&old), 3);
        // Each new one takes the place of one idle for over a second.
        let mut new = Vec::new();
        for left in [2, 1, 0] {
            new.push(connect_from(ATTACKER, addr).await.expect("connect"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(count_open(&old), left);
            assert_eq!(count_open(&new), new.len());
        }
        // Now every connection of that source is fresh: the next one is refused.
        let extra_one = connect_from(ATTACKER, addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!is_open(&extra_one));
        assert_eq!(count_open(&new), 3);
        let m = rig.server.metrics();
        assert_eq!(
            m.sip_tcp_connections_evicted_total.load(Ordering::Relaxed),
            3
        );
        assert_eq!(
            m.sip_tcp_connections_refused_total.load(Ordering::Relaxed),
            1
        );
    })
    .await;
}

/// The issue's own reproduction: handoff under a low `ulimit -n`, one source opening
/// far more idle connections than there are descriptors. The caps, lowered at start
/// to fit beside the media reserve, keep descriptors for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_descriptor_limit_a_flood_leaves_healthz_webhooks_and_calls_working() {
    use common::build::AI_SDP;
    use common::conns::LimitedHandoff;
    use common::{TestUa, WAIT};
    use handoff::sip::message::Method;
    const NOFILE: u64 = 512;
    let mine = raise_nofile();
    let n = flood_size(2 * NOFILE as usize, mine, 2);
    assert!(
        n > NOFILE as usize,
        "descriptor limit {mine} leaves only {n} connections per flood"
    );
    run(async {
        let agent = TestUa::agent(Transport::Udp).await;
        let (min, max) = common::media_range(400);
        let config = format!(
            "{}http.listen = \"127.0.0.1:0\"\n\
             [sip]\nlisten_udp = [\"127.0.0.1:0\"]\nlisten_tcp = [\"127.0.0.1:0\"]\n\
             [limits]\nmax_calls = 20\ndrain_timeout_secs = 1\n\
             [media]\nport_min = {min}\nport_max = {max}\n[log]\nlevel = \"warn\"\n\
             [[route]]\ndefault = true\norg_id = \"{ORG}\"\nagent_id = \"a\"\n\
             ai_agent_uri = \"sip:ai@{}\"\n",
            keys(),
            agent.local_addr()
        );
        let handoff = LimitedHandoff::start(
            env!("CARGO_BIN_EXE_handoff"),
            "conns-nofile",
            &config,
            NOFILE,
        );
        let http_flood = flood(ATTACKER, handoff.http, n).await;
        let sip_flood = flood(ATTACKER, handoff.tcp, n).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (http_open, sip_open) = (count_open(&http_flood), count_open(&sip_flood));
        assert!(
            http_open + sip_open < NOFILE as usize / 2,
            "{http_open} HTTP and {sip_open} SIP/TCP idle connections held under ulimit -n {NOFILE}"
        );

        let client = http_client_from(HONEST);
        let health = client
            .get(format!("http://{}/healthz", handoff.http))
            .send()
            .await
            .expect("/healthz answers during the flood");
        assert_eq!(health.status().as_u16(), 200);

        // A new call binds its media and reaches the AI agent; answered, its webhook stamps.
        let mut agent = agent;
        let mut caller = TestUa::carrier(Transport::Udp, handoff.udp).await;
        caller.send(&caller.invite(&InviteOpts::default())).await;
        caller.expect_response_to(Method::Invite, 100, WAIT).await;
        let ai_invite = agent.expect_request(Method::Invite, WAIT).await;
        assert!(
            String::from_utf8_lossy(ai_invite.msg.body()).contains("m=audio"),
            "the AI leg's offer has no media: media ports not bound"
        );
        agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
        caller.expect_response_to(Method::Invite, 200, WAIT).await;
        let resp = client
            .post(format!(
                "http://{}/backend/zendesk-v2/voice-prefetch/{}",
                handoff.http,
                token()
            ))
            .header("content-type", "application/json")
            .body(r#"{"ticket_id": 4343, "caller_phone": "+14155551212"}"#)
            .send()
            .await
            .expect("the webhook answers during the flood");
        assert_eq!(resp.status().as_u16(), 200);
        let v: Value = resp.json().await.expect("JSON");
        assert_eq!(v["success"], true, "{v}");

        drop((http_flood, sip_flood));
        let log = handoff.stop();
        assert!(
            log.contains("http.max_connections") && log.contains("sip.tcp_max_connections"),
            "no warning naming the lowered caps in:\n{log}"
        );
    })
    .await;
}

/// The sidecar's own accept loop keeps the graceful stop: no new connection once
/// stopped, and a request already in progress still gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_the_request_in_flight_and_takes_no_new_connection() {
    run(async {
        let rig = Rig::new(Transport::Udp, &keys()).await;
        let addr = rig.server.http_addr();
        let body = r#"{"ticket_id": 1, "caller_phone": "+14155550000"}"#;
        let head = format!(
            "POST /backend/zendesk-v2/voice-prefetch/{} HTTP/1.1\r\nHost: h\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            token(),
            body.len()
        );
        let mut c = connect_from(HONEST, addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut c, head.as_bytes())
            .await
            .expect("head");
        // The request is in progress once the sidecar has read its head; before
        // that the connection is idle and a graceful stop may close it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, said) = tokio::join!(rig.server.drain(), async {
            // Stopped: a new connection is refused.
            let mut refused = false;
            for _ in 0..100 {
                if connect_from(HONEST, addr).await.is_err() {
                    refused = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(refused, "the sidecar still accepts after the stop");
            send_and_wait(c, body.as_bytes(), Duration::from_secs(3)).await
        });
        let (closed, said) = said;
        assert!(said.starts_with("HTTP/1.1 200"), "{said}");
        assert!(said.contains("\"success\""), "{said}");
        assert!(closed.is_some(), "the connection stays open after the stop");
    })
    .await;
}
