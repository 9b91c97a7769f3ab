//! Floods and slow clients for the connection-limit tests: many idle connections
//! from one loopback source address (Linux answers for all of 127/8, so a second
//! address plays the attacker), a byte-at-a-time sender, and a check of which
//! connections the server has closed.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Raise this test process's soft descriptor limit as far as the hard limit allows;
/// the soft limit now in force.
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::Resource::NOFILE.get().map(|(soft, _)| soft))
        .unwrap_or(1024)
}

/// How many connections each of `floods` floods may open: `want`, or fewer so the
/// test process (the clients and the in-process server's ends, two descriptors per
/// admitted connection) stays under `nofile` with room for everything else. The
/// tests set their caps well below what this returns at any sane limit.
pub fn flood_size(want: usize, nofile: u64, floods: usize) -> usize {
    let room = nofile.saturating_sub(400) / (2 * floods.max(1) as u64);
    want.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// One TCP connection from `from` (any port) to `to`.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(to).await
}

/// `n` connections from `from` to `to`, opened one after the other and left idle.
/// A connect that fails or hangs (a server that stopped accepting: its backlog is
/// full) is not kept; after a few in a row the flood stops, the server being down.
pub async fn flood(from: IpAddr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    let mut failed_in_a_row = 0;
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_millis(500), connect_from(from, to)).await {
            Ok(Ok(c)) => {
                conns.push(c);
                failed_in_a_row = 0;
            }
            _ => {
                failed_in_a_row += 1;
                if failed_in_a_row == 3 {
                    break;
                }
            }
        }
    }
    conns
}

/// Whether the server still holds `c` open: no EOF and no reset seen yet.
pub fn is_open(c: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match c.try_read(&mut buf) {
            Ok(0) => return false,
            // Something the server sent (an error answer): read on to see the close.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// How many of `conns` the server holds open.
pub fn count_open(conns: &[TcpStream]) -> usize {
    conns.iter().filter(|c| is_open(c)).count()
}

/// Send `prefix` at once, then `bytes` one at a time every `every`, on `c` while
/// waiting for the server to close it; how long that took from the first byte, or
/// `None` if still open at `limit`. What the server said before closing comes too.
pub async fn dribble_until_closed(
    c: TcpStream,
    prefix: &[u8],
    bytes: &[u8],
    every: Duration,
    limit: Duration,
) -> (Option<Duration>, String) {
    let (mut rd, mut wr) = c.into_split();
    let bytes = bytes.to_vec();
    let prefix = prefix.to_vec();
    let writer = tokio::spawn(async move {
        if wr.write_all(&prefix).await.is_err() {
            return;
        }
        for b in bytes {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        // Out of bytes: keep the connection open without sending.
        std::future::pending::<()>().await;
    });
    let start = Instant::now();
    let mut said = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(n) => said.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok();
    writer.abort();
    (closed, String::from_utf8_lossy(&said).into_owned())
}

/// Send `head` at once, then nothing; what the server answered and when it closed
/// (`None` if it had not within `limit`).
pub async fn send_and_wait(
    mut c: TcpStream,
    head: &[u8],
    limit: Duration,
) -> (Option<Duration>, String) {
    let start = Instant::now();
    if c.write_all(head).await.is_err() {
        return (Some(start.elapsed()), String::new());
    }
    let mut said = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(n) => said.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok();
    (closed, String::from_utf8_lossy(&said).into_owned())
}

/// An HTTP client whose connections come from `from`.
pub fn http_client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// The handoff binary run under `ulimit -n` (soft and hard) in its own process, so
/// its descriptor limit is not the test's. Killed by PID when dropped.
pub struct LimitedHandoff {
    child: std::process::Child,
    _stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    dir: std::path::PathBuf,
}

impl LimitedHandoff {
    /// Start `bin` with `config` (a whole `config.toml`) under descriptor limit
    /// `nofile`; returns once it printed its addresses.
    pub fn start(bin: &str, name: &str, config: &str, nofile: u64) -> LimitedHandoff {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir = std::env::temp_dir().join(format!("handoff-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("config.toml");
        std::fs::write(&path, config).expect("write config");
        // The shell lowers both limits, then becomes handoff.
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {nofile} && exec \"$0\" run --config \"$1\""
            ))
            .arg(bin)
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start handoff");
        let mut running = Killed(Some(child));
        let stdout = running.child().stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut addr = |prefix: &str| -> SocketAddr {
            let Some(line) = lines.next() else {
                use std::io::Read;
                let mut err = String::new();
                if let Some(mut e) = running.child().stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("handoff exited before printing {prefix}ADDR: {err}");
            };
            let line = line.expect("utf-8");
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{line:?} is not {prefix}ADDR"))
                .parse()
                .expect("an address")
        };
        let udp = addr("listening udp ");
        let tcp = addr("listening tcp ");
        let http = addr("listening http ");
        LimitedHandoff {
            child: running.0.take().expect("child"),
            _stdout: lines,
            udp,
            tcp,
            http,
            dir,
        }
    }

    /// Stop it (SIGTERM, then SIGKILL after 10 s) and return what it logged.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        log
    }
}

impl Drop for LimitedHandoff {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills a child that start-up gave up on.
struct Killed(Option<std::process::Child>);

impl Killed {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("child")
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
