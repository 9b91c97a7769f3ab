//! Shared parts of the SIPp tests (`sipp_burst.rs`, `sipp_media.rs`,
//! `sipp_transfer.rs`): the real `handoff` binary and SIPp processes on
//! loopback with random free ports, each killed by PID when the test ends (also
//! on panic), every wait with a deadline, and a temp dir with every log that is
//! kept (and its path printed) when the test fails.
//!
//! Included with `#[path = "common/sipp.rs"] mod sipp;` rather than through
//! `common/mod.rs`: these tests spawn processes and need none of the in-process
//! test UA, so they do not compile it.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Called number the carrier dials; the test configs route every number.
pub const CALLED: &str = "+18005550100";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// SIPp's `-t`: one socket (UDP) or one connection (TCP) for all calls.
    pub fn sipp_mode(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }

    /// The URI parameter that selects it (none for UDP, the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        }
    }
}

/// `sipp-scenarios/` of this crate.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp-scenarios")
}

/// Fails loudly (never skips) when SIPp is missing.
pub fn require_sipp() {
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
pub fn free_port() -> u16 {
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
/// `-mp` and the video one on `-mp` + 2. SIPp 3.6.1 also sends its
/// `rtp_stream` audio from the `-mp` socket (`[rtpstream_audio_port]` is `-mp`).
pub fn free_media_port() -> u16 {
    for _ in 0..100 {
        let audio = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
        let port = audio.local_addr().expect("udp local addr").port();
        if port < u16::MAX - 2 && UdpSocket::bind(("127.0.0.1", port + 2)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port pair (p, p+2) after 100 tries");
}

/// A window of `len` UDP ports (even start) for handoff's media relay, the
/// first 16 of which were free a moment ago. Tests run side by side; the
/// relay's pool skips pairs someone else holds, so an overlap costs nothing.
pub fn media_port_range(len: u16) -> (u16, u16) {
    for _ in 0..50 {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
        let start = probe.local_addr().expect("udp local addr").port() & !1;
        drop(probe);
        if start < 10_000 || u32::from(start) + u32::from(len) > 65_000 {
            continue;
        }
        let end = start + len - 1;
        if (start..start + 16).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return (start, end);
        }
    }
    panic!("no free window of {len} UDP ports for the media relay");
}

/// The parts of a handoff test config every SIPp test shares: loopback
/// listeners on port 0, generous limits, the HTTP sidecar on port 0 and the
/// media relay on a random window of ports. `log` is the log level; logs are
/// JSON so tests can read fields from them. The text ends inside `[media]`,
/// so more media keys (`mode = ...`) can follow it directly.
pub fn base_config(log: &str) -> String {
    let (min, max) = media_port_range(400);
    format!(
        r#"[sip]
listen_udp = ["127.0.0.1:0"]
listen_tcp = ["127.0.0.1:0"]

[limits]
max_calls = 100
max_calls_per_second = 5000
drain_timeout_secs = 2

[session]
default_country = "US"

[log]
level = "{log}"
format = "json"

[http]
listen = "127.0.0.1:0"

[media]
port_min = {min}
port_max = {max}
"#
    )
}

/// Waits until SIPp has bound its SIP port (our own bind then fails); fails
/// at once, with SIPp's stderr, if SIPp exits first.
pub fn wait_until_bound(port: u16, transport: Transport, sipp: &mut Sipp) {
    if let Err(why) = try_wait_until_bound(port, transport, sipp) {
        panic!("{why}");
    }
}

/// `wait_until_bound` that says why instead of panicking.
fn try_wait_until_bound(port: u16, transport: Transport, sipp: &mut Sipp) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let free = match transport {
            Transport::Udp => UdpSocket::bind(("127.0.0.1", port)).is_ok(),
            Transport::Tcp => TcpListener::bind(("127.0.0.1", port)).is_ok(),
        };
        if !free {
            return Ok(());
        }
        if let Ok(Some(status)) = sipp.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before binding 127.0.0.1:{port}\n{}",
                sipp.name,
                sipp.stderr_text()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not bind 127.0.0.1:{port} within 10 s\n{}",
                sipp.name,
                sipp.stderr_text()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `Sipp::spawn`, then `wait_until_bound` on its SIP `port`. The control and
/// media ports are free when chosen but another process may take one before
/// SIPp binds it: when SIPp exits for a port in use other than `port`, it is
/// started again with new ones (at most three tries).
pub fn spawn_bound(
    name: &'static str,
    dir: &TestDir,
    tag: &str,
    args: &[&str],
    port: u16,
    transport: Transport,
) -> Sipp {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut sipp = Sipp::spawn(name, dir, tag, args);
        match try_wait_until_bound(port, transport, &mut sipp) {
            Ok(()) => return sipp,
            Err(why) if tries < 3 && lost_a_port_race(&sipp.stderr_text(), port) => {
                eprintln!("{why}\n(started again with other control and media ports)");
                kill_and_reap(&mut sipp.child);
            }
            Err(why) => panic!("{why}"),
        }
    }
}

/// SIPp stopped because a port other than its SIP port was taken.
fn lost_a_port_race(stderr: &str, sip_port: u16) -> bool {
    stderr.contains("Address already in use") && !stderr.contains(&sip_port.to_string())
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("path is UTF-8")
}

pub fn stat<'a>(stats: &'a HashMap<String, String>, name: &str) -> &'a str {
    stats.get(name).map(String::as_str).unwrap_or("<missing>")
}

/// Kills the process by PID and reaps it; safe to call twice.
pub fn kill_and_reap(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A unique directory under the system temp dir; removed when the test
/// passes, kept (and printed) when it panics or `HANDOFF_SIPP_KEEP` is set.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new() -> Self {
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

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Keeps the directory although the thread is not panicking (a failure
    /// reported some other way); its path.
    pub fn keep(self) -> PathBuf {
        let path = self.path.clone();
        std::mem::forget(self);
        path
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("HANDOFF_SIPP_KEEP").is_some() {
            eprintln!("sipp test: kept {} for inspection", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// One SIPp process, foreground, killed by PID on drop (never `-bg`). It runs
/// in the test dir, where scenarios find files they name (audio) and SIPp
/// writes its logs.
pub struct Sipp {
    pub name: &'static str,
    child: Child,
    stats: PathBuf,
    errors: PathBuf,
    stderr: PathBuf,
}

impl Sipp {
    /// Starts `sipp` with `args` plus a free control port (`-cp`), a free
    /// media port pair (`-mp`), no stdin, and statistics, error and message
    /// logs in the test dir named after `tag`.
    pub fn spawn(name: &'static str, dir: &TestDir, tag: &str, args: &[&str]) -> Self {
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
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
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
    pub fn final_stats(&self) -> HashMap<String, String> {
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

    /// Whether SIPp exited 0 having counted exactly `calls` calls, all of
    /// them successful. `created` is `OutgoingCall(C)` for a UAC,
    /// `IncomingCall(C)` for a UAS.
    pub fn all_succeeded(
        status: Option<ExitStatus>,
        stats: &HashMap<String, String>,
        created: &str,
        calls: u32,
    ) -> bool {
        let expected = calls.to_string();
        status.is_some_and(|s| s.success())
            && stat(stats, created) == expected
            && stat(stats, "SuccessfulCall(C)") == expected
            && stat(stats, "FailedCall(C)") == "0"
    }

    /// Why SIPp failed calls, one line per event of its error log
    /// (`-trace_err`): a check that did not hold (with its regexp), or an
    /// unexpected message.
    pub fn failure_reasons(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.errors).unwrap_or_default();
        // Each event starts with a date; a logged message runs on for lines
        // (split on LF only, so the CRs of a logged regexp stay).
        let mut events: Vec<String> = Vec::new();
        for line in text.split('\n') {
            let starts_event = line.len() > 10
                && line.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                && line.as_bytes()[4] == b'-';
            match events.last_mut() {
                Some(event) if !starts_event => {
                    event.push('\n');
                    event.push_str(line);
                }
                _ if starts_event => events.push(line.to_string()),
                _ => {}
            }
        }
        events
            .iter()
            .map(|event| {
                let what = event.split_once(": ").map_or(event.as_str(), |(_, w)| w);
                let head = what.split(" looking in '").next().unwrap_or(what);
                let head = head.lines().next().unwrap_or(head);
                match what.rsplit_once(", with regexp '") {
                    // SIPp turns \r and \n in a regexp into the characters.
                    Some((_, re)) => format!(
                        "{head} regexp '{}",
                        re.replace('\r', "\\r").replace('\n', "\\n")
                    ),
                    None => head.to_string(),
                }
            })
            .collect()
    }

    /// Whether SIPp could not bind one of its sockets: a port another
    /// process took between `free_port` and SIPp's start.
    pub fn lost_a_port_race(&self) -> bool {
        let text = format!(
            "{}{}",
            fs::read_to_string(&self.errors).unwrap_or_default(),
            fs::read_to_string(&self.stderr).unwrap_or_default()
        );
        text.contains("Unable to bind") || text.contains("Address already in use")
    }

    pub fn stderr_text(&self) -> String {
        tail(&fs::read_to_string(&self.stderr).unwrap_or_default(), 1500)
    }

    pub fn report(&self, status: Option<ExitStatus>, stats: &HashMap<String, String>) -> String {
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
pub struct Handoff {
    child: Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The HTTP sidecar (`/metrics`).
    pub http: SocketAddr,
    stderr: PathBuf,
    other_stdout: mpsc::Receiver<String>,
}

impl Handoff {
    /// Writes `config` to the test dir and starts `handoff run` with it; waits
    /// for its `listening udp|tcp|http ADDR` lines (the config must listen on
    /// all three).
    pub fn start(config: &str, dir: &TestDir) -> Self {
        let path = dir.file("handoff.toml");
        fs::write(&path, config).expect("write handoff config");
        let stderr = dir.file("handoff_stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("run")
            .arg("--config")
            .arg(&path)
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

        let unset = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut handoff = Handoff {
            child,
            udp: unset,
            tcp: unset,
            http: unset,
            stderr,
            other_stdout: other_rx,
        };
        let (mut udp, mut tcp, mut http) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(15);
        while udp.is_none() || tcp.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match listen_rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "handoff printed no `listening udp|tcp|http ADDR` lines within 15 s\n{}",
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
                "http" => http = Some(addr),
                _ => {}
            }
        }
        handoff.udp = udp.expect("udp listener");
        handoff.tcp = tcp.expect("tcp listener");
        handoff.http = http.expect("http listener");
        handoff
    }

    /// Where a carrier sends to over `transport`.
    pub fn sip_addr(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
        }
    }

    /// `GET /metrics`, parsed: each sample line's name (labels included) and
    /// value.
    pub fn metrics(&self) -> Result<Metrics, String> {
        let body = http_get(self.http, "/metrics")?;
        let mut samples = HashMap::new();
        for line in body.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.rsplit_once(' ') else {
                return Err(format!("odd metrics line {line:?}"));
            };
            let value: f64 = value
                .parse()
                .map_err(|e| format!("odd value in metrics line {line:?}: {e}"))?;
            samples.insert(name.to_string(), value);
        }
        Ok(Metrics { samples })
    }

    /// Polls `/metrics` until `done` holds or `limit` passes; the last
    /// metrics read either way (an error if none could be read).
    pub fn metrics_when(
        &self,
        limit: Duration,
        done: impl Fn(&Metrics) -> bool,
    ) -> Result<Metrics, String> {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.metrics();
            if m.as_ref().is_ok_and(&done) || Instant::now() >= deadline {
                return m;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks handoff to stop with SIGTERM (sent by PID with kill(1)) and waits
    /// up to `limit` for it to exit; `None` (and the process killed) if it
    /// did not.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
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

    /// Everything handoff logged so far (stderr).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The JSON log lines (`[log] format = "json"`) whose message is
    /// `message`, as their `fields` objects.
    pub fn log_events(&self, message: &str) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("fields").cloned())
            .filter(|f| f.get("message").and_then(|m| m.as_str()) == Some(message))
            .collect()
    }

    pub fn report(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited: {status}"),
            _ => "running".to_string(),
        };
        let stdout: Vec<String> = self.other_stdout.try_iter().collect();
        format!(
            "--- handoff: {state}\nstdout (other than listening lines): {}\nstderr (tail): {}",
            tail(&stdout.join("\n"), 2000),
            tail(&self.log_text(), 2500)
        )
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Samples from handoff's `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: HashMap<String, f64>,
}

impl Metrics {
    /// `handoff_<name>` (labels written out, e.g. `sessions{state="live"}`);
    /// `None` when handoff does not export it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.samples.get(&format!("handoff_{name}")).copied()
    }

    /// `handoff_<name>`, or a panic naming it when it is missing.
    pub fn value(&self, name: &str) -> f64 {
        self.get(name)
            .unwrap_or_else(|| panic!("metric handoff_{name} is missing: {self:?}"))
    }

    /// The `handoff_*` samples that are not zero, sorted, for reports.
    pub fn nonzero(&self) -> String {
        let mut v: Vec<String> = self
            .samples
            .iter()
            .filter(|(_, v)| **v != 0.0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        v.sort();
        v.join("\n")
    }
}

/// A plain HTTP/1.1 GET on loopback; the body of a 200, else an error.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    http_request(addr, "GET", path, &[], "").and_then(|(status, body)| {
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("GET {path}: HTTP {status}: {body}"))
        }
    })
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), with a
/// deadline; the status code and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let err = |e: std::io::Error| format!("{method} http://{addr}{path}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(err)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(err)?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no HTTP header end in {resp:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: odd status line in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// The last `max` bytes of `text`, cut on a char boundary.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// The X-OPENCX-SESSION-ID values of the INVITEs in a SIPp message log
/// (`-trace_msg`); retransmissions count once.
pub fn session_ids(log: &Path) -> std::collections::BTreeSet<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut ids = std::collections::BTreeSet::new();
    let mut in_invite = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("INVITE ") {
            in_invite = true;
        } else if line.trim().is_empty() {
            in_invite = false;
        } else if in_invite {
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("X-OPENCX-SESSION-ID") {
                    ids.insert(value.trim().to_string());
                }
            }
        }
    }
    ids
}
