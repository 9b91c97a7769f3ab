//! A throwaway `redis-server` on a random free loopback port, no persistence,
//! stopped by its PID when dropped (or by the test, to play an outage).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// With persistence: the directory of its append-only file.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one on a free port; panics (the test cannot run) without `redis-server`
    /// (`scripts/install-test-deps.sh` installs it).
    pub fn start() -> RedisServer {
        let port = free_port();
        let mut r = RedisServer {
            port,
            child: None,
            dir: None,
        };
        r.restart();
        r
    }

    /// One that keeps its data across a restart (`appendonly yes`, fsync on
    /// every write), in a temp directory of its own.
    pub fn start_persistent() -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "handoff-redis-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = RedisServer {
            port,
            child: None,
            dir: Some(dir),
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the server on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""]);
        match &self.dir {
            Some(dir) => cmd
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/install-test-deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the server (SIGSTOP to its PID): connections stay open, nothing
    /// answers, as with a hung or partitioned Redis.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let child = self.child.as_ref().expect("redis-server running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        // SAFETY: a plain signal to our own child's PID.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "signal {sig} to redis-server");
    }

    /// Kills this server (by its PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume(); // a stopped process still dies by SIGKILL; this keeps wait() short
        }
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A TCP port free on 127.0.0.1, as the OS hands it out.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}
