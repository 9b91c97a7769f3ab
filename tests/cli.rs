//! The `handoff` binary as a person runs it: configuration errors stop start-up with
//! one line naming the key, the shipped config.toml is valid, and a running handoff
//! stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_handoff");

/// Kills the child by PID if a test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("handoff-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n";

/// `handoff check-config` and `handoff run` both refuse the file with exit 2 and a
/// single stderr line containing `needle`.
fn assert_refused(name: &str, text: &str, needle: &str) {
    let path = temp_config(name, text);
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["run", "--config", path.to_str().unwrap()],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run handoff");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} should name {needle:?}"
        );
    }
}

#[test]
fn unknown_key_stops_start_up_naming_it() {
    assert_refused(
        "unknown",
        &format!("[sip]\nlisten_upd = [\"127.0.0.1:5060\"]\n{ROUTE}"),
        "listen_upd",
    );
}

#[test]
fn bad_address_stops_start_up_naming_the_key() {
    assert_refused(
        "addr",
        &format!("[sip]\nlisten_udp = [\"127.0.0.1\"]\n{ROUTE}"),
        "sip.listen_udp",
    );
}

#[test]
fn media_port_range_smaller_than_max_calls_needs_stops_start_up_naming_the_keys() {
    // The range shipped before issue 12 against the default max_calls.
    assert_refused(
        "media-range",
        &format!("[limits]\nmax_calls = 10000\n[media]\nport_min = 30000\nport_max = 39999\n{ROUTE}"),
        "media.port_min..media.port_max = 30000..=39999 holds 5000 RTP/RTCP pairs, enough for 2500 calls (two pairs a call), fewer than limits.max_calls = 10000",
    );
}

#[test]
fn missing_tls_certificate_stops_start_up_naming_the_key_and_file() {
    assert_refused(
        "tls-cert",
        &format!("[sip]\nlisten_tls = [\"127.0.0.1:0\"]\ntls_cert = \"/nonexistent/chain.pem\"\ntls_key = \"/nonexistent/key.pem\"\n{ROUTE}"),
        "key `sip.tls_cert`: /nonexistent/chain.pem: no such file",
    );
}

#[test]
fn missing_ai_agent_uri_stops_start_up_naming_the_key() {
    assert_refused(
        "noai",
        "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\n",
        "ai_agent_uri",
    );
}

#[test]
fn missing_file_is_one_clear_line() {
    let out = Command::new(BIN)
        .args(["check-config", "/nonexistent/handoff.toml"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("/nonexistent/handoff.toml"), "{stderr}");
}

/// `check-config` on `args`: exit code and the first line of stdout and stderr.
fn check_config(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
    )
}

#[test]
fn check_config_takes_the_file_positionally() {
    let good = temp_config("cc-pos", ROUTE);
    let good = good.to_str().unwrap();
    let (code, out, err) = check_config(&["check-config", good]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{good}: ok"));
    let bad = temp_config("cc-pos-bad", &format!("[sip]\nlisten_upd = []\n{ROUTE}"));
    let (code, _, err) = check_config(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("listen_upd"), "{err}");
}

#[test]
fn check_config_takes_the_global_config_before_the_command() {
    let good = temp_config("cc-global", ROUTE);
    let good = good.to_str().unwrap();
    let (code, out, err) = check_config(&["--config", good, "check-config"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{good}: ok"));
    let bad = temp_config("cc-global-bad", &format!("[sip]\nlisten_upd = []\n{ROUTE}"));
    let (code, _, err) = check_config(&["--config", bad.to_str().unwrap(), "check-config"]);
    assert_eq!(
        code,
        Some(2),
        "a bad file named by --config is checked, not config.toml"
    );
    assert!(err.contains("listen_upd"), "{err}");
}

#[test]
fn check_config_takes_config_after_the_command() {
    let good = temp_config("cc-after", ROUTE);
    let good = good.to_str().unwrap();
    let (code, out, err) = check_config(&["check-config", "--config", good]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{good}: ok"));
    let bad = temp_config("cc-after-bad", &format!("[sip]\nlisten_upd = []\n{ROUTE}"));
    let (code, _, err) = check_config(&["check-config", "-c", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("listen_upd"), "{err}");
    // Two different files is a mistake, not a silent choice.
    let (code, _, err) = check_config(&["check-config", good, "--config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn shipped_config_toml_checks_clean() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let out = Command::new(BIN)
        .args(["check-config", path])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `handoff run` with `[media]` keys `media` does not start: a non-zero exit and one
/// stderr line naming the media keys and the problem.
fn assert_media_start_fails(name: &str, media: &str, needles: &[&str]) {
    let path = temp_config(
        name,
        // Two pairs: one call.
        &format!("[sip]\nlisten_udp = [\"127.0.0.1:0\"]\nlisten_tcp = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_calls = 1\n[log]\nlevel = \"error\"\n[media]\n{media}\n{ROUTE}"),
    );
    let out = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .expect("run handoff");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stdout}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{stderr:?} should name {needle:?}");
    }
}

#[test]
fn unbindable_media_ip_stops_start_up_naming_it() {
    // 192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface of this host.
    assert_media_start_fails(
        "media-ip",
        "ip = \"192.0.2.1\"\npublic_ip = \"192.0.2.1\"\nport_min = 30000\nport_max = 30003",
        &[
            "media.ip 192.0.2.1",
            "media.port_min..media.port_max = 30000..30003",
            "os error",
        ],
    );
}

#[test]
fn media_port_range_all_in_use_stops_start_up_naming_it() {
    // Two even/odd pairs (the least a range may hold), every port held here.
    let held: Vec<std::net::UdpSocket> = (0..200)
        .find_map(|_| {
            let a = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = a.local_addr().ok()?.port();
            if port % 2 != 0 || port > u16::MAX - 3 {
                return None;
            }
            let mut held = vec![a];
            for p in port + 1..=port + 3 {
                held.push(std::net::UdpSocket::bind(("127.0.0.1", p)).ok()?);
            }
            Some(held)
        })
        .expect("four free consecutive ports");
    let min = held[0].local_addr().unwrap().port();
    let max = min + 3;
    assert_media_start_fails(
        "media-taken",
        &format!("ip = \"127.0.0.1\"\nport_min = {min}\nport_max = {max}"),
        &[
            &format!("media.port_min..media.port_max = {min}..{max}"),
            "media.ip 127.0.0.1",
            "in use",
        ],
    );
}

#[test]
fn sigterm_stops_a_running_handoff_cleanly() {
    let path = temp_config(
        "term",
        &format!("[sip]\nlisten_udp = [\"127.0.0.1:0\"]\nlisten_tcp = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n[limits]\ndrain_timeout_secs = 1\n[log]\nlevel = \"warn\"\n{ROUTE}"),
    );
    let child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start handoff");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let second = lines.next().expect("a line").expect("utf-8");
    let third = lines.next().expect("a line").expect("utf-8");
    assert!(first.starts_with("listening udp 127.0.0.1:"), "{first}");
    assert!(second.starts_with("listening tcp 127.0.0.1:"), "{second}");
    assert!(third.starts_with("listening http 127.0.0.1:"), "{third}");
    let udp: std::net::SocketAddr = first["listening udp ".len()..].parse().expect("address");
    assert_ne!(udp.port(), 0);

    // It answers while running.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = sock.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:handoff@{udp} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKcli1\r\nFrom: <sip:t@{local}>;tag=1\r\nTo: <sip:handoff@{udp}>\r\nCall-ID: cli-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(options.as_bytes(), udp).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer to OPTIONS");
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let pid = running.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = running.0.try_wait().expect("wait") {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "handoff did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn webhook_url_prints_a_url_signed_with_the_newest_key() {
    let keys = "[http]\npublic_base_url = \"https://hooks.example.com/\"\n[[http.signing_keys]]\nkid = \"old\"\nsecret = \"old-secret-0123456789\"\nissuer = \"cli\"\n[[http.signing_keys]]\nkid = \"new\"\nsecret = \"new-secret-0123456789\"\nissuer = \"cli\"\n";
    let path = temp_config("webhook-url", &format!("{keys}{ROUTE}"));
    let out = Command::new(BIN)
        .args([
            "webhook-url",
            "--org",
            "org-7",
            "--config",
            path.to_str().unwrap(),
        ])
        .output()
        .expect("run handoff");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("token jti ") && stderr.contains("expires "),
        "what revoking it needs: {stderr}"
    );
    let url = String::from_utf8(out.stdout).expect("utf-8");
    let token = url
        .trim()
        .strip_prefix("https://hooks.example.com/backend/zendesk-v2/voice-prefetch/")
        .unwrap_or_else(|| panic!("{url}"));
    let key = |kid: &str, secret: &str| handoff::config::SigningKey {
        kid: kid.into(),
        secret: handoff::config::Secret::new(secret),
        issuer: "cli".into(),
    };
    assert_eq!(
        handoff::http::auth::verify_prefetch_token(token, &[key("new", "new-secret-0123456789")]),
        Ok("org-7".to_owned())
    );

    let bare = temp_config("webhook-url-none", ROUTE);
    let out = Command::new(BIN)
        .args([
            "webhook-url",
            "--org",
            "org-7",
            "--config",
            bare.to_str().unwrap(),
        ])
        .output()
        .expect("run handoff");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no signing key"), "{stderr}");
}

/// SIGHUP makes a running handoff read its TLS certificate and key again (logged,
/// and it keeps running: the default action of SIGHUP would end it); SIGTERM then
/// stops it as usual.
#[test]
fn sighup_reloads_the_tls_certificate_and_handoff_keeps_running() {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let dir = std::env::temp_dir().join(format!("handoff-cli-{}-hup-files", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (c, k) = (dir.join("chain.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    let path = temp_config(
        "hup",
        &format!("[sip]\nlisten_udp = [\"127.0.0.1:0\"]\nlisten_tcp = []\nlisten_tls = [\"127.0.0.1:0\"]\ntls_cert = {:?}\ntls_key = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[limits]\ndrain_timeout_secs = 1\n[log]\nlevel = \"info\"\n{ROUTE}", c.display().to_string(), k.display().to_string()),
    );
    let child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start handoff");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("stdout");
    let tls_line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("listening tls "))
        .expect("a TLS listener printed");
    assert!(
        tls_line.starts_with("listening tls 127.0.0.1:"),
        "{tls_line}"
    );
    let stderr = running.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let pid = running.0.id().to_string();
    let kill = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    kill("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("a reload line in the log");
        if line.contains("TLS certificate reloaded") {
            break;
        }
    }
    assert!(
        running.0.try_wait().expect("wait").is_none(),
        "SIGHUP ended handoff"
    );
    kill("-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = running.0.try_wait().expect("wait") {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "handoff did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
