//! Shared parts of the integration tests: a small SIP test UA ([`TestUa`]) that plays
//! the carrier or the AI agent over UDP or TCP, message builders for it, and
//! [`start_handoff`], which runs the real server in-process on loopback with random
//! ports. Everything a test starts lives in the test's own tokio runtime and is
//! dropped with it; no process is spawned.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod build;
pub mod capture;
pub mod cli;
pub mod cluster;
pub mod conns;
pub mod crash;
pub mod dns;
pub mod expect;
pub mod full_cluster;
pub mod http_security;
pub mod kamailio;
pub mod kamailio_tls;
pub mod media;
pub mod node_proc;
pub mod outbound;
pub mod redis;
pub mod scenarios;
pub mod store_conformance;
pub mod tls;
pub mod trunks;
pub mod ua;
pub mod zendesk;
pub mod zendesk_hooks;

pub use build::{cancel_for, Dialog, InviteOpts, SDP};
pub use ua::{Received, TestUa};

use handoff::server::Server;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for a message that must come at once.
pub const WAIT: Duration = Duration::from_secs(2);

/// The called number every scenario dials; the default route takes it.
pub const CALLED: &str = "+18005550100";

/// The caller's number in E.164 as the default caller's From gives it.
pub const CALLER_E164: &str = "+14155551212";

/// Which transport a scenario runs over (carrier leg and AI leg alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP with TLS: handoff's certificate and the UAs' from the test CA (`tls.rs`).
    Tls,
}

impl Transport {
    /// As written in a Via sent-protocol.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The URI parameter that selects it (none for UDP, the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        }
    }

    /// A stream transport (TCP or TLS).
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }
}

/// Configuration keys every test starts from: loopback, random ports, small timers
/// (T1 = 50 ms makes Timer B 3.2 s) and a 1 s drain.
const BASE_KEYS: &[(&str, &str)] = &[
    ("sip.listen_udp", r#"["127.0.0.1:0"]"#),
    ("sip.listen_tcp", r#"["127.0.0.1:0"]"#),
    ("http.listen", r#""127.0.0.1:0""#),
    ("sip.t1_ms", "50"),
    ("sip.t2_ms", "400"),
    ("sip.ai_answer_timeout_secs", "2"),
    ("limits.drain_timeout_secs", "1"),
    ("log.level", r#""warn""#),
];

/// A random even-based window of `len` UDP ports on loopback that were all
/// free a moment ago.
pub fn media_range(len: u16) -> (u16, u16) {
    use rand::Rng;
    for _ in 0..50 {
        let min = rand::thread_rng().gen_range(10_000u16..60_000) & !1;
        let max = min + len - 1;
        let free =
            (min..=max.min(min + 15)).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if free {
            return (min, max);
        }
    }
    panic!("no free media port window");
}

/// The `config.toml` text for a test. `extra` holds dotted keys (`limits.max_calls = 1`)
/// that replace or add to [`BASE_KEYS`], optionally followed by `[[route]]` tables that
/// replace the default route; `{ai}` in them stands for the AI agent's URI.
pub fn config_text(transport: Transport, ai_port: u16, extra: &str) -> String {
    let ai = format!("sip:ai@127.0.0.1:{ai_port}{}", transport.uri_param());
    let (keys_part, tables) = match extra
        .find("\n[")
        .or_else(|| extra.starts_with('[').then_some(0))
    {
        Some(i) => extra.split_at(i),
        None => (extra, ""),
    };
    let mut keys: Vec<(String, String)> = BASE_KEYS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // A random media port range per handoff: tests run in parallel. Pairs
    // another test holds are skipped by the pool, so an overlap costs nothing.
    let (min, max) = media_range(400);
    keys.push(("media.port_min".into(), min.to_string()));
    keys.push(("media.port_max".into(), max.to_string()));
    // The range must hold limits.max_calls calls (4 ports each): 400 ports, 100 calls.
    keys.push(("limits.max_calls".into(), "100".into()));
    let tls_keys = if transport == Transport::Tls {
        tls::handoff_keys()
    } else {
        String::new()
    };
    for line in tls_keys
        .lines()
        .chain(keys_part.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("extra config line {line:?} is not key = value"));
        let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
        match keys.iter_mut().find(|(have, _)| *have == k) {
            Some(slot) => slot.1 = v,
            None => keys.push((k, v)),
        }
    }
    let mut text: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    if tables.trim().is_empty() {
        text.push_str(&format!(
            "\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"{ai}\"\n"
        ));
    } else {
        text.push('\n');
        text.push_str(&tables.replace("{ai}", &ai));
    }
    text
}

/// Start handoff in-process with the test configuration, its AI agent at
/// `127.0.0.1:ai_port` over `transport`.
pub async fn start_handoff(transport: Transport, ai_port: u16, extra: &str) -> Server {
    start_with_config(&config_text(transport, ai_port, extra)).await
}

/// Start handoff from a whole configuration text.
pub async fn start_with_config(text: &str) -> Server {
    let settings = handoff::config::Config::parse(text, "test")
        .unwrap_or_else(|e| panic!("test config refused: {e}\n{text}"));
    Server::start(settings).await.expect("handoff starts")
}

/// Where the carrier sends to over `transport`.
pub fn handoff_addr(server: &Server, transport: Transport) -> std::net::SocketAddr {
    match transport {
        Transport::Udp => server.udp_addrs()[0],
        Transport::Tcp => server.tcp_addrs()[0],
        Transport::Tls => server.tls_addrs()[0],
    }
}

/// The usual cast: an AI agent UA listening, handoff configured to reach it, and a
/// carrier UA pointed at handoff.
pub struct Rig {
    pub server: Server,
    pub caller: TestUa,
    pub agent: TestUa,
    pub transport: Transport,
}

impl Rig {
    pub async fn new(transport: Transport, extra: &str) -> Rig {
        let agent = TestUa::agent(transport).await;
        let server = start_handoff(transport, agent.local_addr().port(), extra).await;
        let caller = TestUa::carrier(transport, handoff_addr(&server, transport)).await;
        Rig {
            server,
            caller,
            agent,
            transport,
        }
    }

    /// Another carrier UA (its own socket or connection) to the same handoff.
    pub async fn another_caller(&self) -> TestUa {
        TestUa::carrier(self.transport, handoff_addr(&self.server, self.transport)).await
    }
}

/// Poll `cond` every 20 ms until it holds or `within` has passed; returns whether it held.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run `fut` with an overall bound so a hung test fails instead of hanging the suite.
pub async fn bounded<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}

/// One `#[tokio::test]` per scenario, each calling `scenarios::<name>(transport)`.
#[macro_export]
macro_rules! scenario_tests {
    ($transport:expr; $($group:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                common::bounded(
                    std::time::Duration::from_secs(20),
                    common::scenarios::$group::$name($transport),
                )
                .await;
            }
        )*
    };
}
