//! The shipped Kamailio edge (`deploy/kamailio/kamailio.cfg`) as a process on a
//! random loopback port, stopped by its PID when dropped, and the calls a test
//! carrier places through it: INVITE to the edge, the 2xx's Record-Route kept as
//! the dialog's route set, ACK and BYE sent to the edge along it.
//!
//! Needs `kamailio` (Debian package, 5.6): `scripts/install-test-deps.sh`.

use super::build::AI_SDP;
use super::{Dialog, InviteOpts, Received, TestUa};
use handoff::sip::message::{Message, Method};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CFG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kamailio/kamailio.cfg");

/// How long a message through the edge may take: an INVITE the edge fails over
/// after a node's FR_TIMER silence comes a second late, more on a loaded machine.
pub const EDGE_WAIT: Duration = Duration::from_secs(5);

/// Kamailio, stopped by PID (SIGTERM, then SIGKILL) when dropped; its
/// workers leave with it.
pub struct Kamailio {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Kamailio {
    /// Kamailio with the shipped configuration on a free port of 127.0.0.1, its
    /// dispatcher set 1 the `nodes`, probed every `ping_secs`; an INVITE a node
    /// leaves unanswered for a second goes to the next (`FR_TIMER=1000`). Its log
    /// is `kamailio.log` in a temp dir of its own ([`Kamailio::log`]).
    pub fn start(nodes: &[SocketAddr], ping_secs: u64) -> Kamailio {
        let bin = which("kamailio").unwrap_or_else(|| {
            panic!("kamailio not found: run scripts/install-test-deps.sh (Debian package kamailio)")
        });
        let dir = std::env::temp_dir().join(format!(
            "handoff-kamailio-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let list: String = nodes.iter().map(|n| format!("1 sip:{n} 0 0\n")).collect();
        let list_path = dir.join("dispatcher.list");
        std::fs::write(&list_path, list).expect("write dispatcher list");
        let port = free_udp_and_tcp_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.join("kamailio.log")).expect("log file");
        let child = Command::new(bin)
            .arg("-f")
            .arg(CFG)
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-Y")
            .arg(&dir)
            .arg("-A")
            .arg(format!("SIP_LISTEN=udp:{addr}"))
            .arg("-A")
            .arg(format!("SIP_LISTEN_TCP=tcp:{addr}"))
            .arg("-A")
            .arg(format!("DS_LIST=\"{}\"", list_path.display()))
            .arg("-A")
            .arg(format!("DS_PING_INTERVAL={ping_secs}"))
            .arg("-A")
            .arg("FR_TIMER=1000")
            .arg("-A")
            .arg("LOG_LEVEL=2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kamailio");
        Kamailio { child, addr, dir }
    }

    /// Kamailio with a configuration of the test's own (`cfg`, in `dir`, which is
    /// removed with it), listening at `addr` (what [`wait_up`] probes over UDP).
    pub fn spawn(cfg: &std::path::Path, dir: PathBuf, addr: SocketAddr) -> Kamailio {
        let bin = which("kamailio").unwrap_or_else(|| {
            panic!("kamailio not found: run scripts/install-test-deps.sh (Debian package kamailio)")
        });
        let log = std::fs::File::create(dir.join("kamailio.log")).expect("log file");
        let child = Command::new(bin)
            .arg("-f")
            .arg(cfg)
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-Y")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kamailio");
        Kamailio { child, addr, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SIGTERM first: Kamailio's main process takes its workers down with it.
            // SAFETY: a plain signal to our own child's PID.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `name` on the PATH, or in /usr/sbin or /sbin (where Debian puts daemons).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port free on 127.0.0.1 for both UDP and TCP a moment ago.
pub fn free_udp_and_tcp_port() -> u16 {
    free_udp_and_tcp_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port free on `ip` for both UDP and TCP a moment ago.
pub fn free_udp_and_tcp_port_on(ip: IpAddr) -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind((ip, 0)).expect("bind");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for UDP and TCP on {ip}");
}

/// Wait until Kamailio answers an OPTIONS to itself.
pub async fn wait_up(kam: &mut Kamailio, probe: &mut TestUa) {
    let opts = format!(
        "OPTIONS sip:{} SIP/2.0\nVia: {{via}}\nMax-Forwards: 70\nFrom: <sip:t@test.invalid>;tag={{tag}}\nTo: <sip:{}>\nCall-ID: {{call_id}}\nCSeq: 1 OPTIONS\n\n",
        kam.addr, kam.addr
    );
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Ok(Some(status)) = kam.child.try_wait() {
            panic!("kamailio exited ({status}):\n{}", kam.log());
        }
        probe.send_raw(&opts).await;
        if let Some(r) = probe.recv(Duration::from_millis(300)).await {
            if r.msg.status() == Some(200) {
                return;
            }
        }
    }
    panic!("kamailio did not answer OPTIONS:\n{}", kam.log());
}

/// One call up through the edge: which node took it, and what ends it.
pub struct EdgeCall {
    /// The node's SIP address (where its AI leg came from).
    pub node: SocketAddr,
    pub dlg: Dialog,
    pub route: String,
    pub agent_dlg: Dialog,
    /// `X-OPENCX-SESSION-ID` of the AI leg.
    pub session_id: String,
    /// The caller's number as the INVITE's From gave it (its user part).
    pub caller_phone: String,
}

/// The Route set of the caller's dialog: the 2xx's Record-Route, reversed (RFC 3261 12.1.2).
pub fn route_set(ok: &Message) -> String {
    let rr: Vec<&str> = ok.header_values("Record-Route").collect();
    assert!(
        !rr.is_empty(),
        "the 200 through Kamailio carries its Record-Route"
    );
    rr.into_iter().rev().collect::<Vec<_>>().join(", ")
}

/// A request in the caller's dialog, sent to the edge with the Route set.
pub async fn send_in_dialog(caller: &TestUa, edge: SocketAddr, mut req: Message, route: &str) {
    req.push("Route", route.to_owned());
    caller.send_bytes_to(&req.to_bytes(), Some(edge)).await;
}

/// Place a call through the edge, have the AI agent answer, ACK it through the edge.
pub async fn call(caller: &mut TestUa, agent: &mut TestUa, edge: SocketAddr) -> EdgeCall {
    call_with(caller, agent, edge, &InviteOpts::default()).await
}

/// [`call`] with the INVITE made from `opts` (another caller's From, say).
pub async fn call_with(
    caller: &mut TestUa,
    agent: &mut TestUa,
    edge: SocketAddr,
    opts: &InviteOpts,
) -> EdgeCall {
    let invite = caller.invite(opts);
    let caller_phone = invite
        .from_header()
        .and_then(|f| f.uri.user.clone())
        .unwrap_or_default();
    caller.send(&invite).await;
    let call_id = invite.call_id().expect("Call-ID").to_owned();
    let ai_invite: Received = agent.expect_request(Method::Invite, EDGE_WAIT).await;
    let session_id = ai_invite
        .msg
        .header("X-OPENCX-SESSION-ID")
        .expect("the AI leg carries the session id")
        .to_owned();
    let ai_ok = agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    let ok = caller
        .expect(
            "the 200 to the caller's INVITE",
            EDGE_WAIT,
            |m| {
                m.status() == Some(200)
                    && m.call_id() == Some(call_id.as_str())
                    && m.cseq().is_some_and(|c| c.method == Method::Invite)
            },
            |m| m.status().is_some_and(|s| s < 200),
        )
        .await
        .msg;
    let dlg = Dialog::as_uac(&invite, &ok);
    let route = route_set(&ok);
    send_in_dialog(caller, edge, caller.ack(&dlg, None), &route).await;
    agent.expect_request(Method::Ack, EDGE_WAIT).await;
    caller.clear_backlog();
    EdgeCall {
        node: ai_invite.from,
        dlg,
        route,
        agent_dlg: Dialog::as_uas(&ai_invite.msg, &ai_ok),
        session_id,
        caller_phone,
    }
}

/// The caller hangs up through the edge; the BYE reaches the owning node, which
/// answers 200 and sends its own BYE to the AI agent.
pub async fn hang_up(caller: &mut TestUa, agent: &mut TestUa, edge: SocketAddr, c: &mut EdgeCall) {
    let bye = caller.bye(&mut c.dlg);
    send_in_dialog(caller, edge, bye, &c.route).await;
    caller.expect_response_to(Method::Bye, 200, EDGE_WAIT).await;
    let ai_bye = agent.expect_request(Method::Bye, EDGE_WAIT).await;
    assert_eq!(
        ai_bye.from, c.node,
        "the BYE reached the node that owns the dialog"
    );
    assert_eq!(ai_bye.msg.call_id(), Some(c.agent_dlg.call_id.as_str()));
    agent.respond(&ai_bye, 200, &[], None).await;
}

/// The AI agent hangs up: the owning node answers it and sends its BYE to the
/// caller along the dialog's route set, through the edge.
pub async fn agent_hangs_up(
    caller: &mut TestUa,
    agent: &mut TestUa,
    edge: SocketAddr,
    c: &mut EdgeCall,
) {
    let bye = agent.bye(&mut c.agent_dlg);
    agent.send(&bye).await;
    agent.expect_response_to(Method::Bye, 200, EDGE_WAIT).await;
    let caller_bye = caller.expect_request(Method::Bye, EDGE_WAIT).await;
    assert_eq!(
        caller_bye.from, edge,
        "the node's BYE came through the edge"
    );
    assert_eq!(caller_bye.msg.call_id(), Some(c.dlg.call_id.as_str()));
    caller.respond(&caller_bye, 200, &[], None).await;
}
