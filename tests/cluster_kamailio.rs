//! The shipped Kamailio edge (`deploy/kamailio/kamailio.cfg`) in front of two
//! handoff nodes (issue 13, item 4): calls spread over both nodes by the
//! Call-ID hash, in-dialog requests reach the node that owns the dialog through
//! the Record-Route, and a draining node stops getting new calls with no call
//! failing. Kamailio runs as a process on random loopback ports and is stopped
//! by PID; the nodes and the UAs are in-process.
//!
//! Needs `kamailio` (Debian package, 5.6): `scripts/install-test-deps.sh`.

mod common;

use common::build::AI_SDP;
use common::{bounded, start_handoff, Dialog, InviteOpts, Received, TestUa, Transport, WAIT};
use handoff::server::Server;
use handoff::sip::message::{Message, Method};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CFG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kamailio/kamailio.cfg");

/// Seconds between Kamailio's OPTIONS probes in this test.
const PING_SECS: u64 = 1;

/// Kamailio, stopped by PID (SIGTERM, then SIGKILL) when dropped; its
/// workers leave with it.
struct Kamailio {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Kamailio {
    fn start(nodes: &[SocketAddr], ping_secs: u64) -> Kamailio {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SIGTERM first: Kamailio's main process takes its workers down with it.
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

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port free on 127.0.0.1 for both UDP and TCP a moment ago.
fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for UDP and TCP");
}

/// Wait until Kamailio answers an OPTIONS to itself.
async fn wait_up(kam: &mut Kamailio, probe: &mut TestUa) {
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
struct EdgeCall {
    node: SocketAddr,
    dlg: Dialog,
    route: String,
    agent_dlg: Dialog,
}

/// The Route set of the caller's dialog: the 2xx's Record-Route, reversed (RFC 3261 12.1.2).
fn route_set(ok: &Message) -> String {
    let rr: Vec<&str> = ok.header_values("Record-Route").collect();
    assert!(
        !rr.is_empty(),
        "the 200 through Kamailio carries its Record-Route"
    );
    rr.into_iter().rev().collect::<Vec<_>>().join(", ")
}

/// A request in the caller's dialog, sent to the edge with the Route set.
async fn send_in_dialog(caller: &TestUa, edge: SocketAddr, mut req: Message, route: &str) {
    req.push("Route", route.to_owned());
    caller.send_bytes_to(&req.to_bytes(), Some(edge)).await;
}

/// Place a call through the edge, have the AI agent answer, ACK it through the edge.
async fn call(caller: &mut TestUa, agent: &mut TestUa, edge: SocketAddr) -> EdgeCall {
    let invite = caller.invite(&InviteOpts::default());
    caller.send(&invite).await;
    let ai_invite: Received = agent.expect_request(Method::Invite, WAIT).await;
    let ai_ok = agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    let ok = caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await
        .msg;
    assert_eq!(ok.call_id(), invite.call_id(), "the 200 is the caller's");
    let dlg = Dialog::as_uac(&invite, &ok);
    let route = route_set(&ok);
    send_in_dialog(caller, edge, caller.ack(&dlg, None), &route).await;
    agent.expect_request(Method::Ack, WAIT).await;
    caller.clear_backlog();
    EdgeCall {
        node: ai_invite.from,
        dlg,
        route,
        agent_dlg: Dialog::as_uas(&ai_invite.msg, &ai_ok),
    }
}

/// The caller hangs up through the edge; the BYE reaches the owning node, which
/// answers 200 and sends its own BYE to the AI agent.
async fn hang_up(caller: &mut TestUa, agent: &mut TestUa, edge: SocketAddr, c: &mut EdgeCall) {
    let bye = caller.bye(&mut c.dlg);
    send_in_dialog(caller, edge, bye, &c.route).await;
    caller.expect_response_to(Method::Bye, 200, WAIT).await;
    let ai_bye = agent.expect_request(Method::Bye, WAIT).await;
    assert_eq!(
        ai_bye.from, c.node,
        "the BYE reached the node that owns the dialog"
    );
    assert_eq!(ai_bye.msg.call_id(), Some(c.agent_dlg.call_id.as_str()));
    agent.respond(&ai_bye, 200, &[], None).await;
}

/// The AI agent hangs up: the owning node answers it and sends its BYE to the
/// caller along the dialog's route set, through the edge.
async fn agent_hangs_up(
    caller: &mut TestUa,
    agent: &mut TestUa,
    edge: SocketAddr,
    c: &mut EdgeCall,
) {
    let bye = agent.bye(&mut c.agent_dlg);
    agent.send(&bye).await;
    agent.expect_response_to(Method::Bye, 200, WAIT).await;
    let caller_bye = caller.expect_request(Method::Bye, WAIT).await;
    assert_eq!(
        caller_bye.from, edge,
        "the node's BYE came through the edge"
    );
    assert_eq!(caller_bye.msg.call_id(), Some(c.dlg.call_id.as_str()));
    caller.respond(&caller_bye, 200, &[], None).await;
}

fn started(s: &Server) -> u64 {
    s.metrics()
        .calls_started_total
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn refused(s: &Server) -> u64 {
    s.metrics()
        .calls_rejected_overload_total
        .load(std::sync::atomic::Ordering::Relaxed)
}

async fn node(ai_port: u16, id: &str) -> Server {
    start_handoff(
        Transport::Udp,
        ai_port,
        &format!("cluster.node_id = \"{id}\"\nlimits.drain_timeout_secs = 30"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_spreads_calls_routes_in_dialog_to_owner_and_skips_draining_nodes() {
    let mut agent = TestUa::agent(Transport::Udp).await;
    let ai_port = agent.local_addr().port();
    let nodes = [
        node(ai_port, "node-a").await,
        node(ai_port, "node-b").await,
        node(ai_port, "node-c").await,
    ];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.udp_addrs()[0]).collect();
    let owner = |at: SocketAddr| {
        addrs
            .iter()
            .position(|a| *a == at)
            .unwrap_or_else(|| panic!("AI leg from {at}, not a node"))
    };
    let [a, b, c] = &nodes;
    let mut kam = Kamailio::start(&addrs, PING_SECS);
    let edge = kam.addr;
    let mut caller = TestUa::carrier(Transport::Udp, edge).await;
    bounded(Duration::from_secs(90), async {
        wait_up(&mut kam, &mut caller).await;

        // 30 calls: the Call-ID hash gives every node some; every BYE through
        // the edge reaches the node that took the call. One call on a stays up.
        let mut taken = [0u64; 3];
        let mut kept_on_a = None;
        for _ in 0..30 {
            let mut call = call(&mut caller, &mut agent, edge).await;
            let n = owner(call.node);
            taken[n] += 1;
            if n == 0 && kept_on_a.is_none() {
                kept_on_a = Some(call);
                continue;
            }
            hang_up(&mut caller, &mut agent, edge, &mut call).await;
        }
        assert!(taken.iter().all(|t| *t > 0), "calls per node: {taken:?}");
        assert_eq!(
            [started(a), started(b), started(c)],
            taken,
            "each node started exactly the calls its AI legs showed"
        );
        let mut live_on_a = kept_on_a.expect("a took a call");
        assert!(
            common::eventually(Duration::from_secs(3), || {
                nodes.iter().map(Server::active_calls).collect::<Vec<_>>() == [1, 0, 0]
            })
            .await,
            "one call live on a, none elsewhere"
        );

        // a drains with its call up. Once Kamailio's probe has had its 503, a
        // gets no INVITE at all (not even one it refuses) and no call fails.
        a.start_draining();
        tokio::time::sleep(Duration::from_millis(PING_SECS * 2000 + 500)).await;
        let (refused_a, started_a) = (refused(a), started(a));
        for _ in 0..12 {
            let mut call = call(&mut caller, &mut agent, edge).await;
            assert_ne!(owner(call.node), 0, "the draining node took a new call");
            hang_up(&mut caller, &mut agent, edge, &mut call).await;
        }
        assert_eq!(
            (refused(a), started(a)),
            (refused_a, started_a),
            "after its probe got 503, Kamailio sent the draining node no INVITE"
        );

        // c drains now, between two probes: an INVITE hashed to c gets its 503
        // and fails over to b (failure_route, ds_next_dst); the caller sees
        // only the 200. Calls until one has gone that way.
        let started_c = started(c);
        c.start_draining();
        let mut sent = 0;
        while refused(c) == 0 {
            assert!(sent < 30, "30 calls and none hashed to c");
            let mut call = call(&mut caller, &mut agent, edge).await;
            assert_eq!(owner(call.node), 1, "b takes every call now");
            hang_up(&mut caller, &mut agent, edge, &mut call).await;
            sent += 1;
        }
        assert_eq!(started(c), started_c, "no new call started on c");

        // The draining node's live call went on; the AI agent ends it and the
        // node's BYE reaches the caller through the edge (its Record-Route).
        assert_eq!(a.active_calls(), 1, "the draining node's call is still up");
        agent_hangs_up(&mut caller, &mut agent, edge, &mut live_on_a).await;
        assert!(
            common::eventually(Duration::from_secs(3), || a.active_calls() == 0).await,
            "the live call on the draining node ended"
        );
    })
    .await;
    drop(kam);
}

/// A node that died (SIGKILL) but is still in the dispatcher set, not yet
/// probed: an INVITE hashed to it gets no reply within FR_TIMER and goes to the
/// next node; the caller gets its call. Probes are far apart here so that
/// only the timeout can take the dead node out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_fails_an_invite_over_when_a_dead_node_does_not_answer() {
    let mut agent = TestUa::agent(Transport::Udp).await;
    let live = node(agent.local_addr().port(), "node-live").await;
    // The dead node: a socket that reads and never answers.
    let mut dead = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let live_addr = live.udp_addrs()[0];
    let mut kam = Kamailio::start(&[dead.local_addr(), live_addr], 600);
    let edge = kam.addr;
    let mut caller = TestUa::carrier(Transport::Udp, edge).await;
    bounded(Duration::from_secs(60), async {
        wait_up(&mut kam, &mut caller).await;
        let mut calls = 0;
        let mut failed_over = false;
        while !failed_over {
            assert!(calls < 20, "20 calls and none hashed to the dead node");
            let before = Instant::now();
            let mut c = call(&mut caller, &mut agent, edge).await;
            assert_eq!(c.node, live_addr, "every call ends up on the live node");
            hang_up(&mut caller, &mut agent, edge, &mut c).await;
            calls += 1;
            // Did this one go to the dead node first?
            let mut tried = false;
            while let Some(r) = dead.recv(Duration::from_millis(10)).await {
                tried |= r.msg.method() == Some(&Method::Invite);
            }
            if tried {
                assert!(
                    before.elapsed() >= Duration::from_millis(900),
                    "failover came before FR_TIMER"
                );
                failed_over = true;
            }
        }
        // Marked inactive by the timeout: the next calls go straight to the live node.
        for _ in 0..6 {
            let mut c = call(&mut caller, &mut agent, edge).await;
            hang_up(&mut caller, &mut agent, edge, &mut c).await;
        }
        assert!(
            dead.recv(Duration::from_millis(100)).await.is_none(),
            "an INVITE went to the node marked inactive"
        );
    })
    .await;
    drop(kam);
}
