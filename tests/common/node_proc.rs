//! A handoff node as an operator runs it: the real binary (`handoff run`) on a
//! config file and an SQLite store file of its own, on fixed addresses chosen
//! at random (a loopback address of its own, free ports), so that a node
//! SIGKILLed or drained and started again comes back where Kamailio's
//! dispatcher list expects it. Stopped by its PID when dropped.

use super::cli::{spawn_run, Running};
use handoff::config::{Secret, SigningKey};
use handoff::http::auth::mint_prefetch_token;
use rand::Rng;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The prefetch webhook's signing key in every node's config.
pub const SIGNING_SECRET: &str = "full-cluster-signing-secret-0123";

/// A loopback address other than 127.0.0.1 (Linux answers for all of
/// 127.0.0.0/8): no other test binds it, so a port chosen here stays free
/// for a restart.
pub fn random_loopback() -> IpAddr {
    let mut r = rand::thread_rng();
    IpAddr::V4(Ipv4Addr::new(
        127,
        r.gen_range(1..=254),
        r.gen(),
        r.gen_range(1..=254),
    ))
}

/// A port free on `ip` for TCP a moment ago.
fn free_tcp_port_on(ip: IpAddr) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

/// A node's addresses, fixed for all its runs.
#[derive(Debug, Clone, Copy)]
pub struct NodeAddrs {
    /// SIP over UDP and TCP (the same port).
    pub sip: SocketAddr,
    pub http: SocketAddr,
}

impl NodeAddrs {
    pub fn pick() -> NodeAddrs {
        let ip = random_loopback();
        let sip = super::kamailio::free_udp_and_tcp_port_on(ip);
        NodeAddrs {
            sip: SocketAddr::new(ip, sip),
            http: SocketAddr::new(ip, free_tcp_port_on(ip)),
        }
    }

    /// The config keys that put a node on these addresses.
    pub fn keys(&self) -> String {
        format!(
            "sip.listen_udp = [\"{sip}\"]\nsip.listen_tcp = [\"{sip}\"]\nhttp.listen = \"{http}\"\n",
            sip = self.sip,
            http = self.http
        )
    }
}

/// One handoff process, started again on the same config and store as often as
/// a test likes. Each run's stderr goes to `<id>.<run>.err` beside the config.
pub struct NodeProc {
    pub id: String,
    pub addrs: NodeAddrs,
    pub config: PathBuf,
    /// The SQLite store file (`store.path`).
    pub db: PathBuf,
    run: Option<Running>,
    runs: u32,
}

impl NodeProc {
    /// Writes `config_text` as `<dir>/<id>.toml` and starts the node on it.
    /// The text must put the node on `addrs` ([`NodeAddrs::keys`]) and its
    /// store at `<dir>/<id>.db` ([`NodeProc::db_path`]).
    pub async fn start(id: &str, dir: &Path, addrs: NodeAddrs, config_text: &str) -> NodeProc {
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(&config, config_text).expect("write node config");
        let mut n = NodeProc {
            id: id.to_owned(),
            addrs,
            config,
            db: Self::db_path(dir, id),
            run: None,
            runs: 0,
        };
        n.restart().await;
        n
    }

    pub fn db_path(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.db"))
    }

    /// Starts the node again on its config and store (it must not be running).
    pub async fn restart(&mut self) {
        assert!(self.run.is_none(), "{}: already running", self.id);
        self.runs += 1;
        let (run, udp, http) = spawn_run(self.config.clone(), self.stderr_path()).await;
        assert_eq!(
            (udp, http),
            (self.addrs.sip, self.addrs.http),
            "{}: listens where its config says",
            self.id
        );
        self.run = Some(run);
    }

    fn stderr_path(&self) -> PathBuf {
        self.config
            .with_file_name(format!("{}.{}.err", self.id, self.runs))
    }

    /// The current (or last) run's stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        self.run.is_some()
    }

    fn pid(&self) -> libc::pid_t {
        let run = self.run.as_ref().unwrap_or_else(|| {
            panic!("{}: not running", self.id);
        });
        libc::pid_t::try_from(run.0.id()).expect("pid fits")
    }

    /// SIGTERM by PID: the node drains (503 to OPTIONS and new INVITEs, live
    /// calls go on) and exits when its last call ends.
    pub fn sigterm(&self) {
        // SAFETY: a plain signal to the child this test started.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
    }

    /// SIGKILL by PID, and reaped: the node dies with whatever it held.
    pub fn sigkill(&mut self) {
        let mut run = self.run.take().unwrap_or_else(|| {
            panic!("{}: not running", self.id);
        });
        run.0.kill().expect("SIGKILL");
        run.0.wait().expect("reaped");
    }

    /// SIGKILL, then started again on the same config and store.
    pub async fn kill_and_restart(&mut self) {
        self.sigkill();
        self.restart().await;
    }

    /// Waits (at most `within`) for the process to exit by itself; reaps it.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let until = Instant::now() + within;
        loop {
            let run = self.run.as_mut().expect("running");
            if let Some(status) = run.0.try_wait().expect("wait") {
                self.run = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "{} did not exit within {within:?}:\n{}",
                self.id,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A sample of this node's `/metrics` (`name` with its labels, if any, as
    /// written there); `None` when absent or the node does not answer.
    pub async fn metric(&self, name: &str) -> Option<i64> {
        crate::common::cli::metric(self.addrs.http, name).await
    }

    /// Waits (at most `within`) until `cond` holds for the metric's value.
    pub async fn wait_metric(&self, name: &str, within: Duration, cond: impl Fn(i64) -> bool) {
        let until = Instant::now() + within;
        loop {
            let got = self.metric(name).await;
            if got.is_some_and(&cond) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{}: {name} is {got:?} after {within:?}",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Calls this node started (`handoff_calls_started_total`).
    pub async fn started(&self) -> i64 {
        self.metric("handoff_calls_started_total")
            .await
            .unwrap_or_else(|| panic!("{}: no /metrics", self.id))
    }

    /// The prefetch webhook URL of this node with a valid token for `org`.
    pub fn webhook_url(&self, org: &str) -> String {
        let key = SigningKey {
            kid: "k1".into(),
            secret: Secret::new(SIGNING_SECRET),
            issuer: "t".into(),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let token = mint_prefetch_token(&key, org, now, None).expect("mint");
        format!(
            "http://{}/backend/zendesk-v2/voice-prefetch/{token}",
            self.addrs.http
        )
    }

    /// Fires the prefetch webhook stamping `ticket` on the live call of
    /// `caller_phone` (org "org-test") at this node; the HTTP status and the
    /// JSON answer (null when the body is not JSON).
    pub async fn fire_webhook(&self, ticket: u64, caller_phone: &str) -> (u16, serde_json::Value) {
        let body = format!(
            r#"{{"ticket_id": {ticket}, "caller_phone": "{caller_phone}", "requester_phone": ""}}"#
        );
        let resp = reqwest::Client::new()
            .post(self.webhook_url("org-test"))
            .header("Content-Type", "application/json")
            .timeout(Duration::from_secs(5))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: webhook: {e}", self.id));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}
