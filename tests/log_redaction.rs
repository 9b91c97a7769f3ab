//! Callers' numbers in handoff's own log: by default only their last four
//! digits (`log.redact_phone_numbers`); in full only when an operator says so.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::cli::{Running, BIN};

/// Runs handoff with `log_section`, sends one INVITE from +14155550123 to
/// +14155559876, stops it with SIGTERM and returns what it logged.
fn log_of_one_call(name: &str, log_section: &str) -> String {
    let dir = std::env::temp_dir().join(format!("handoff-redact-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[sip]\nlisten_udp = [\"127.0.0.1:0\"]\nlisten_tcp = []\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [limits]\ndrain_timeout_secs = 1\n[media]\nmode = \"passthrough\"\n[log]\nlevel = \"info\"\n{log_section}\n\
             [[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:9\"\n"
        ),
    )
    .expect("write config");
    let child = Command::new(BIN)
        .args(["run", "--config", path.to_str().expect("utf-8 path")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start handoff");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("stdout");
    let first = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a line")
        .expect("utf-8");
    let udp: std::net::SocketAddr = first
        .strip_prefix("listening udp ")
        .expect("the UDP address first")
        .parse()
        .expect("address");

    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let local = sock.local_addr().expect("address");
    let invite = format!(
        "INVITE sip:+14155559876@{udp} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKredact1\r\n\
         From: <sip:+14155550123@{local}>;tag=1\r\nTo: <sip:+14155559876@{udp}>\r\nCall-ID: redact-1\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:c@{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(invite.as_bytes(), udp).expect("send");
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("100 Trying");
    assert!(
        buf[..n].starts_with(b"SIP/2.0 100 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "handoff did not stop within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut log = String::new();
    running
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("read the log");
    let _ = std::fs::remove_dir_all(&dir);
    log
}

#[test]
fn numbers_are_masked_but_their_last_four_digits_by_default() {
    let log = log_of_one_call("default", "");
    let line = log
        .lines()
        .find(|l| l.contains("call received"))
        .unwrap_or_else(|| panic!("no 'call received' line in:\n{log}"));
    assert!(line.contains("+*******0123"), "{line}");
    assert!(line.contains("+*******9876"), "{line}");
    assert!(
        !log.contains("4155550123"),
        "the caller's full number in:\n{log}"
    );
    assert!(
        !log.contains("4155559876"),
        "the called full number in:\n{log}"
    );
}

#[test]
fn an_operator_may_log_full_numbers() {
    let log = log_of_one_call("full", "redact_phone_numbers = false");
    let line = log
        .lines()
        .find(|l| l.contains("call received"))
        .unwrap_or_else(|| panic!("no 'call received' line in:\n{log}"));
    assert!(line.contains("+14155550123"), "{line}");
}
