//! Bursts of SIPp calls through the real `handoff` binary on loopback.
//!
//! Carrier (SIPp UAC, `sipp-scenarios/carrier_uac*.xml`) -> handoff -> AI agent
//! (SIPp UAS, `sipp-scenarios/ai_agent*_uas.xml`). The UAS checks every INVITE
//! handoff sends (session id added, carrier's spoofed one stripped, agent id
//! added) and refuses the call if a check fails, so a passing run means every
//! call was bridged, relayed and torn down on both legs.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`). Every port is a random
//! free one, every process is killed by PID when the test ends (also on panic),
//! and every wait has a deadline. On failure the temp dir with SIPp's error,
//! message and statistics files is kept and its path printed.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Called number the carrier dials; the test config routes every number.
const CALLED: &str = "+18005550100";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// SIPp's `-t`: one socket (UDP) or one connection (TCP) for all calls.
    fn sipp_mode(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// One burst: which scenario pair, how many calls, how fast.
struct Burst {
    transport: Transport,
    uac_scenario: &'static str,
    uas_scenario: &'static str,
    calls: u32,
    rate: u32,
}

#[test]
fn udp_burst_of_200_calls_is_bridged_without_failures() {
    run_burst(Burst {
        transport: Transport::Udp,
        uac_scenario: "carrier_uac.xml",
        uas_scenario: "ai_agent_uas.xml",
        calls: 200,
        rate: 50,
    });
}

#[test]
fn tcp_burst_of_200_calls_is_bridged_without_failures() {
    run_burst(Burst {
        transport: Transport::Tcp,
        uac_scenario: "carrier_uac.xml",
        uas_scenario: "ai_agent_uas.xml",
        calls: 200,
        rate: 50,
    });
}

#[test]
fn agent_hangup_ends_both_legs_for_100_calls() {
    run_burst(Burst {
        transport: Transport::Udp,
        uac_scenario: "carrier_uac_agent_hangup.xml",
        uas_scenario: "ai_agent_hangup_uas.xml",
        calls: 100,
        rate: 50,
    });
}

fn run_burst(burst: Burst) {
    require_sipp();
    let dir = TestDir::new();
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp-scenarios");
    let mode = burst.transport.sipp_mode();

    // The AI agent: exits by itself after `calls` calls (-m), 0 if all passed.
    let uas_port = free_port();
    let mut uas = Sipp::spawn(
        "ai-agent UAS",
        &dir,
        "uas",
        &[
            "-sf",
            path_str(&scenarios.join(burst.uas_scenario)),
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-t",
            mode,
            "-m",
            &burst.calls.to_string(),
            // Bounds the UAS even if calls never arrive.
            "-timeout",
            "40s",
        ],
    );
    wait_until_bound(uas_port, burst.transport, &uas);

    let transport_param = match burst.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
    };
    let config = dir.path.join("handoff.toml");
    fs::write(
        &config,
        format!(
            r#"[sip]
listen_udp = ["127.0.0.1:0"]
listen_tcp = ["127.0.0.1:0"]

[limits]
max_calls = 20000
max_calls_per_second = 5000
drain_timeout_secs = 2

[session]
default_country = "US"

[log]
level = "warn"

[http]
listen = "127.0.0.1:0"

[[route]]
prefix = ""
org_id = "org-test"
agent_id = "agent-test"
ai_agent_uri = "sip:ai@127.0.0.1:{uas_port}{transport_param}"
"#
        ),
    )
    .expect("write handoff config");
    let mut handoff = Handoff::start(&config, &dir);
    let target = match burst.transport {
        Transport::Udp => handoff.udp,
        Transport::Tcp => handoff.tcp,
    };

    // The carrier: places `calls` calls at `rate` per second, then exits.
    let mut uac = Sipp::spawn(
        "carrier UAC",
        &dir,
        "uac",
        &[
            &target.to_string(),
            "-sf",
            path_str(&scenarios.join(burst.uac_scenario)),
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-t",
            mode,
            "-s",
            CALLED,
            "-r",
            &burst.rate.to_string(),
            "-m",
            &burst.calls.to_string(),
            // A call waiting more than 5 s for any message fails ...
            "-recv_timeout",
            "5000",
            // ... and the whole run fails after 30 s.
            "-timeout",
            "30s",
            "-timeout_error",
        ],
    );
    let uac_status = uac.wait(Duration::from_secs(45));
    // The UAS keeps each call 4 s after its BYE (timewait) before it exits.
    let uas_status = uas.wait(Duration::from_secs(20));

    let uac_stats = uac.final_stats();
    let uas_stats = uas.final_stats();
    let expected = burst.calls.to_string();
    let uac_ok = uac_status.is_some_and(|s| s.success())
        && stat(&uac_stats, "OutgoingCall(C)") == expected
        && stat(&uac_stats, "SuccessfulCall(C)") == expected
        && stat(&uac_stats, "FailedCall(C)") == "0";
    let uas_ok = uas_status.is_some_and(|s| s.success())
        && stat(&uas_stats, "IncomingCall(C)") == expected
        && stat(&uas_stats, "SuccessfulCall(C)") == expected
        && stat(&uas_stats, "FailedCall(C)") == "0";
    if !(uac_ok && uas_ok) {
        panic!(
            "{} calls over {:?} through handoff did not all succeed\n{}\n{}\n{}\nfiles kept in {}",
            burst.calls,
            burst.transport,
            uac.report(uac_status, &uac_stats),
            uas.report(uas_status, &uas_stats),
            handoff.report(),
            dir.path.display()
        );
    }
}

/// Fails loudly (never skips) when SIPp is missing.
fn require_sipp() {
    match Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`sipp` is not on PATH: these tests need SIPp 3.6; install Debian's \
             sip-tester package (apt-get install sip-tester)"
        ),
        Err(e) => panic!("cannot run `sipp -v`: {e}"),
    }
}

/// A port free on 127.0.0.1 for both UDP and TCP, as the OS hands it out.
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
        let port = udp.local_addr().expect("udp local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP after 100 tries");
}

/// A pair `p`, `p + 2` of free UDP ports: SIPp binds its RTP echo socket on
/// `-mp` and the video one on `-mp` + 2.
fn free_media_port() -> u16 {
    for _ in 0..100 {
        let audio = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
        let port = audio.local_addr().expect("udp local addr").port();
        if port < u16::MAX - 2 && UdpSocket::bind(("127.0.0.1", port + 2)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port pair (p, p+2) after 100 tries");
}

/// Waits until SIPp has bound its SIP port (our own bind then fails).
fn wait_until_bound(port: u16, transport: Transport, sipp: &Sipp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let free = match transport {
            Transport::Udp => UdpSocket::bind(("127.0.0.1", port)).is_ok(),
            Transport::Tcp => TcpListener::bind(("127.0.0.1", port)).is_ok(),
        };
        if !free {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not bind 127.0.0.1:{port} within 10 s\n{}",
            sipp.name,
            sipp.stderr_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("path is UTF-8")
}

fn stat<'a>(stats: &'a HashMap<String, String>, name: &str) -> &'a str {
    stats.get(name).map(String::as_str).unwrap_or("<missing>")
}

/// Kills the process by PID and reaps it; safe to call twice.
fn kill_and_reap(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A unique directory under the system temp dir; removed when the test
/// passes, kept (and printed) when it panics.
struct TestDir {
    path: PathBuf,
}

impl TestDir {
    fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "handoff-sipp-{}-{}-{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create test temp dir");
        TestDir { path }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("sipp_burst: kept {} for inspection", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// One SIPp process, foreground, killed by PID on drop (never `-bg`).
struct Sipp {
    name: &'static str,
    child: Child,
    stats: PathBuf,
    errors: PathBuf,
    stderr: PathBuf,
}

impl Sipp {
    fn spawn(name: &'static str, dir: &TestDir, tag: &str, args: &[&str]) -> Self {
        let stats = dir.file(&format!("{tag}_stats.csv"));
        let errors = dir.file(&format!("{tag}_errors.log"));
        let messages = dir.file(&format!("{tag}_messages.log"));
        let stderr = dir.file(&format!("{tag}_stderr.log"));
        let mut cmd = Command::new("sipp");
        cmd.args(args)
            .args(["-cp", &free_port().to_string()])
            .args(["-mp", &free_media_port().to_string()])
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stats)
            .args(["-trace_err", "-error_file"])
            .arg(&errors)
            .args(["-trace_msg", "-message_file"])
            .arg(&messages)
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            // SIPp redraws its screen on stdout; nobody reads it.
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("create sipp stderr file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp ({name}): {e}"));
        Sipp {
            name,
            child,
            stats,
            errors,
            stderr,
        }
    }

    /// Waits for exit up to `limit`; `None` (and the process killed) if it
    /// did not exit in time.
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => {
                    kill_and_reap(&mut self.child);
                    return None;
                }
            }
        }
    }

    /// The last line of SIPp's statistics file, by column name. SIPp writes
    /// one more line when it exits, so after `wait` this is the final count.
    fn final_stats(&self) -> HashMap<String, String> {
        let text = fs::read_to_string(&self.stats).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let (Some(header), Some(last)) = (lines.next(), lines.next_back()) else {
            return HashMap::new();
        };
        header
            .split(';')
            .zip(last.split(';'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn stderr_text(&self) -> String {
        tail(&fs::read_to_string(&self.stderr).unwrap_or_default(), 1500)
    }

    fn report(&self, status: Option<ExitStatus>, stats: &HashMap<String, String>) -> String {
        let status = match status {
            Some(s) => s.to_string(),
            None => "did not exit in time (killed)".to_string(),
        };
        let interesting: Vec<String> = stats
            .iter()
            .filter(|(k, v)| {
                (k.ends_with("Call(C)") || k.starts_with("Failed") && k.ends_with("(C)"))
                    && v.as_str() != "0"
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "--- {}: {status}; stats: {}\nstderr: {}\nerrors log (tail): {}",
            self.name,
            if interesting.is_empty() {
                "<none>".to_string()
            } else {
                interesting.join(" ")
            },
            self.stderr_text(),
            tail(&fs::read_to_string(&self.errors).unwrap_or_default(), 1500),
        )
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// The handoff binary under test, killed by PID on drop.
struct Handoff {
    child: Child,
    udp: SocketAddr,
    tcp: SocketAddr,
    stderr: PathBuf,
    other_stdout: mpsc::Receiver<String>,
}

impl Handoff {
    fn start(config: &Path, dir: &TestDir) -> Self {
        let stderr = dir.file("handoff_stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("create handoff stderr file"))
            .spawn()
            .expect("start handoff");

        // A thread drains stdout for the whole run so handoff never blocks on
        // a full pipe; `listening` lines go to one channel, the rest to another.
        let stdout = child.stdout.take().expect("handoff stdout");
        let (listen_tx, listen_rx) = mpsc::channel();
        let (other_tx, other_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let sent = match line.strip_prefix("listening ") {
                    Some(rest) => listen_tx.send(rest.to_string()).is_ok(),
                    None => other_tx.send(line).is_ok(),
                };
                if !sent {
                    break;
                }
            }
        });

        let mut handoff = Handoff {
            child,
            udp: SocketAddr::from(([0, 0, 0, 0], 0)),
            tcp: SocketAddr::from(([0, 0, 0, 0], 0)),
            stderr,
            other_stdout: other_rx,
        };
        let (mut udp, mut tcp) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(15);
        while udp.is_none() || tcp.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match listen_rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "handoff printed no `listening udp|tcp ADDR` lines within 15 s\n{}",
                    handoff.report()
                ),
            };
            let (proto, addr) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("odd listening line: `listening {line}`"));
            let addr: SocketAddr = addr
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("odd address in `listening {line}`: {e}"));
            match proto {
                "udp" => udp = Some(addr),
                "tcp" => tcp = Some(addr),
                _ => {}
            }
        }
        handoff.udp = udp.expect("udp listener");
        handoff.tcp = tcp.expect("tcp listener");
        handoff
    }

    fn report(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited: {status}"),
            _ => "running".to_string(),
        };
        let stdout: Vec<String> = self.other_stdout.try_iter().collect();
        format!(
            "--- handoff: {state}\nstdout (other than listening lines): {}\nstderr (tail): {}",
            tail(&stdout.join("\n"), 2000),
            tail(&fs::read_to_string(&self.stderr).unwrap_or_default(), 1500)
        )
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// The last `max` bytes of `text`, cut on a char boundary.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}
