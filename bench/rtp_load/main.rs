//! Media load through a relay (issue 3): N concurrent G.711 calls, 50
//! packets/s each way per call, 160-byte payloads, on loopback.
//!
//! ```sh
//! cargo run --release --example rtp_load -- --mode handoff --sip 127.0.0.1:5060 \
//!     --uas-port 5080 --pid $(pidof handoff) --calls 1000 --secs 20
//! cargo run --release --example rtp_load -- --mode rtpengine --ng 127.0.0.1:2223 \
//!     --pid $(pidof rtpengine) --calls 1000 --secs 20
//! cargo run --release --example rtp_load -- --mode direct --calls 1000 --secs 20
//! cargo run --release --example rtp_load -- --mode handoff-srtp-chain --calls 500 \
//!     --port-min 20000 --port-max 29999 --secs 20
//! cargo run --release --example rtp_load -- --mode rtpengine-srtp-chain --ng 127.0.0.1:2223 \
//!     --pid $(pidof rtpengine) --calls 500 --secs 20
//! ```
//!
//! `handoff`: the calls are set up with SIP (this process is the carrier and
//! the AI agent; handoff's route must point at `--uas-port`), the relay
//! ports read from the rewritten SDPs. `rtpengine`: offer/answer over the ng
//! protocol. `direct`: no relay, each end sends straight to the other, the
//! baseline for "added" latency. The `*-chain` modes (issue 14, SRTP) relay
//! each call twice, plain -> SRTP -> plain with `-srtp-`, plain twice
//! without: handoff's relays hosted in a child process of this one
//! (`host.rs`, no SIP), rtpengine's as two ng calls. One JSON line of figures goes to stdout,
//! progress to stderr. Everything is bounded in time; see bench/rtp_load.sh.

mod host;
mod ng;
mod procfs;
mod rtp;
mod sip;

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Handoff,
    Rtpengine,
    Direct,
    /// Two hosted handoff relays per call, plain.
    HandoffChain,
    /// Two hosted handoff relays per call, SRTP between them.
    HandoffSrtpChain,
    /// Two rtpengine calls per call, plain.
    RtpengineChain,
    /// Two rtpengine calls per call, SRTP between them.
    RtpengineSrtpChain,
    /// Internal: the child hosting handoff's relays (`host.rs`).
    Serve,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Handoff => "handoff",
            Mode::Rtpengine => "rtpengine",
            Mode::Direct => "direct",
            Mode::HandoffChain => "handoff-chain",
            Mode::HandoffSrtpChain => "handoff-srtp-chain",
            Mode::RtpengineChain => "rtpengine-chain",
            Mode::RtpengineSrtpChain => "rtpengine-srtp-chain",
            Mode::Serve => "serve",
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "RTP load through handoff's media relay or rtpengine")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Concurrent calls.
    #[arg(long)]
    calls: usize,
    /// Seconds of RTP.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// handoff's SIP address (mode handoff).
    #[arg(long)]
    sip: Option<SocketAddr>,
    /// The UDP port the AI agent side listens on; handoff's route points here.
    #[arg(long)]
    uas_port: Option<u16>,
    /// rtpengine's ng control address (mode rtpengine).
    #[arg(long)]
    ng: Option<SocketAddr>,
    /// The relay's process, for CPU and memory.
    #[arg(long)]
    pid: Option<u32>,
    /// New calls per second during setup (SIP mode).
    #[arg(long, default_value_t = 400)]
    setup_rate: u32,
    /// Sockets per side of the load generator, shared round robin by the calls.
    #[arg(long, default_value_t = 8)]
    sockets: usize,
    /// Send/receive loop period, microseconds.
    #[arg(long, default_value_t = 500)]
    tick_us: u64,
    /// Media ports of the hosted handoff relays (handoff-*-chain modes).
    #[arg(long, default_value_t = 20000)]
    port_min: u16,
    #[arg(long, default_value_t = 29999)]
    port_max: u16,
    /// Internal (mode serve): SRTP between the two relays.
    #[arg(long)]
    srtp: bool,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[rtp_load] {}", msg.as_ref());
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.mode == Mode::Serve {
        return host::serve(args.calls, args.srtp, args.port_min, args.port_max);
    }
    let ep = rtp::Endpoints::bind(args.sockets.max(1)).map_err(|e| format!("bind: {e}"))?;
    let mut hosted = None;
    let mut hosted_paths = Vec::new();
    if matches!(args.mode, Mode::HandoffChain | Mode::HandoffSrtpChain) {
        let (h, paths) = host::Host::start(
            args.calls,
            args.mode == Mode::HandoffSrtpChain,
            (args.port_min, args.port_max),
            &ep,
        )?;
        hosted_paths = paths;
        hosted = Some(h);
    }
    let pid = args.pid.or(hosted.as_ref().map(host::Host::pid));
    let rss = || pid.and_then(procfs::rss_kb);
    let cpu = || pid.and_then(procfs::cpu_secs);
    let rss_before = rss();

    // --- set up the calls -------------------------------------------------
    let setup_start = Instant::now();
    let mut sip = None;
    let mut ng = None;
    let mut setup_errors = Vec::new();
    let (paths, idx) = match args.mode {
        Mode::Handoff => {
            let target = args.sip.ok_or("--sip is required in mode handoff")?;
            let port = args
                .uas_port
                .ok_or("--uas-port is required in mode handoff")?;
            let uas = UdpSocket::bind((target.ip(), port))
                .map_err(|e| format!("UAS port {port}: {e}"))?;
            let mut calls =
                sip::SipCalls::new(target, uas, args.calls, &ep).map_err(|e| e.to_string())?;
            let ramp = args.calls as f64 / f64::from(args.setup_rate.max(1));
            calls.setup(
                args.setup_rate.max(1),
                Instant::now() + Duration::from_secs_f64(ramp + 20.0),
            );
            let p = calls.paths();
            sip = Some(calls);
            p
        }
        Mode::Rtpengine => {
            let target = args.ng.ok_or("--ng is required in mode rtpengine")?;
            let mut client = ng::Ng::new(target).map_err(|e| e.to_string())?;
            let (paths, idx, errors) = ng::setup_all(&mut client, args.calls, &ep);
            setup_errors = errors;
            ng = Some(client);
            (paths, idx)
        }
        Mode::Direct => {
            let paths = ep.direct_paths(args.calls);
            let idx = (0..args.calls).collect();
            (paths, idx)
        }
        Mode::HandoffChain | Mode::HandoffSrtpChain => {
            let paths = std::mem::take(&mut hosted_paths);
            let idx = (0..paths.len()).collect();
            (paths, idx)
        }
        Mode::RtpengineChain | Mode::RtpengineSrtpChain => {
            let target = args.ng.ok_or("--ng is required in the rtpengine modes")?;
            let mut client = ng::Ng::new(target).map_err(|e| e.to_string())?;
            let srtp = args.mode == Mode::RtpengineSrtpChain;
            let (paths, idx, errors) = ng::setup_all_chains(&mut client, args.calls, &ep, srtp);
            setup_errors = errors;
            ng = Some(client);
            (paths, idx)
        }
        Mode::Serve => return Err("mode serve is the relay host's own".into()),
    };
    let setup_secs = setup_start.elapsed().as_secs_f64();
    log(format!(
        "{:?}: {} of {} calls up in {setup_secs:.1} s",
        args.mode,
        paths.len(),
        args.calls
    ));
    if let Some(e) = setup_errors.first() {
        log(format!("{} setups failed, first: {e}", setup_errors.len()));
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_setup = rss();

    // --- RTP --------------------------------------------------------------
    let schedule = rtp::Schedule {
        secs: args.secs,
        tick: Duration::from_micros(args.tick_us.max(50)),
        drain: Duration::from_millis(500),
    };
    let cpu0 = cpu();
    let gen0 = procfs::self_cpu_secs();
    let (rcvbuf0, sndbuf0) = procfs::udp_buffer_errors();
    let gen_ports = ep.ports();
    let gen_drops0 = procfs::socket_drops(&gen_ports);
    let mut mid_rss = None;
    let rtp_start = Instant::now();
    let out = rtp::run(&ep, &paths, &schedule, || {
        if let Some(s) = sip.as_mut() {
            s.poll();
        }
        // Memory while every call is held and carrying media, half way.
        if mid_rss.is_none() && rtp_start.elapsed().as_secs() >= args.secs / 2 {
            mid_rss = Some(rss());
        }
    });
    let cpu1 = cpu();
    let gen1 = procfs::self_cpu_secs();
    let (rcvbuf1, sndbuf1) = procfs::udp_buffer_errors();
    let gen_drops = procfs::socket_drops(&gen_ports).saturating_sub(gen_drops0);
    let window = rtp_start.elapsed().as_secs_f64();
    let rss_hold = mid_rss.flatten();

    // --- tear down --------------------------------------------------------
    let mut teardown = json!(null);
    if let Some(s) = sip.as_mut() {
        let deadline = Instant::now() + Duration::from_secs_f64(args.calls as f64 / 400.0 + 15.0);
        let c = s.teardown(400, deadline);
        teardown = json!({
            "ended": c.ended,
            "bye_unanswered": c.bye_unanswered,
            "ai_leg_byes": s.ai_byes(),
            "failed_setups": c.failed,
            "failure_statuses": c.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "byes_from_target_during_run": c.target_byes,
        });
    }
    if let Some(client) = ng.as_mut() {
        let chain = args.mode == Mode::RtpengineChain || args.mode == Mode::RtpengineSrtpChain;
        let mut failed = 0;
        for &c in &idx {
            let deleted = if chain {
                client.delete_chain(c)
            } else {
                client.delete(c)
            };
            if deleted.is_err() {
                failed += 1;
            }
        }
        teardown = json!({ "deleted": idx.len() - failed, "delete_failed": failed });
    }

    // --- report -----------------------------------------------------------
    let n = paths.len();
    let mut both = rtp::Histogram::new();
    both.merge(&out.latency[0]);
    both.merge(&out.latency[1]);
    let lat = |h: &rtp::Histogram| {
        json!({
            "p50_us": h.quantile_us(0.50),
            "p99_us": h.quantile_us(0.99),
            "p999_us": h.quantile_us(0.999),
            "max_us": h.max_us(),
            "count": h.count(),
        })
    };
    let sent: u64 = out.sent.iter().sum();
    let received: u64 = out.received.iter().sum();
    let lost = sent.saturating_sub(received);
    let target_cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let per_call_kb = match (rss_before, rss_hold) {
        (Some(b), Some(h)) if n > 0 => Some((h as f64 - b as f64) * 1024.0 / n as f64),
        _ => None,
    };
    let report = json!({
        "mode": args.mode.name(),
        "calls_wanted": args.calls,
        "calls_up": n,
        "setup_secs": setup_secs,
        "setup_errors": setup_errors.len(),
        "secs": args.secs,
        "offered_pps": (n * 2 * 50),
        "send_secs": out.send_secs,
        "window_secs": window,
        "max_send_lag_ms": out.max_send_lag.as_secs_f64() * 1000.0,
        "generator_stalls": out.stalls,
        "generator_worst_us_send_recv_sip_oversleep": out.worst_us,
        "generator_stalled_ms": out.stalled.as_secs_f64() * 1000.0,
        "sent": out.sent,
        "received": out.received,
        "lost": [out.sent[0].saturating_sub(out.received[0]), out.sent[1].saturating_sub(out.received[1])],
        "loss_pct": if sent > 0 { lost as f64 * 100.0 / sent as f64 } else { 0.0 },
        "misrouted": out.misrouted,
        "malformed": out.malformed,
        "duplicates": out.duplicates,
        "send_errors": out.send_errors,
        "latency": lat(&both),
        "latency_caller_to_far": lat(&out.latency[0]),
        "latency_far_to_caller": lat(&out.latency[1]),
        "target_cpu_secs": target_cpu,
        "target_cpu_pct": target_cpu.map(|c| c * 100.0 / window),
        // Per packet sent into the relay, and so per call at the nominal 100
        // packets/s (50 each way): unlike CPU / window, not thinned out when
        // the generator stalled and the schedule moved on.
        "target_cpu_us_per_packet": target_cpu.filter(|_| sent > 0).map(|c| c * 1e6 / sent as f64),
        "target_cpu_us_per_call_second": target_cpu.filter(|_| sent > 0).map(|c| c * 1e6 / sent as f64 * 100.0),
        "rss_before_kb": rss_before,
        "rss_setup_kb": rss_setup,
        "rss_hold_kb": rss_hold,
        "bytes_per_call": per_call_kb,
        "generator_cpu_pct": (gen1 - gen0) * 100.0 / window,
        "generator_socket_drops": gen_drops,
        "netns_udp_rcvbuf_errors": rcvbuf1.saturating_sub(rcvbuf0),
        "netns_udp_sndbuf_errors": sndbuf1.saturating_sub(sndbuf0),
        "teardown": teardown,
    });
    log(format!(
        "{:?} {n} calls: sent {sent} lost {lost} ({:.4}%), p50 {:?} us p99 {:?} us, target cpu {:?} s, generator {:.0}%",
        args.mode,
        if sent > 0 { lost as f64 * 100.0 / sent as f64 } else { 0.0 },
        both.quantile_us(0.5),
        both.quantile_us(0.99),
        target_cpu,
        (gen1 - gen0) * 100.0 / window
    ));
    println!("{report}");
    if let Some(h) = hosted {
        h.stop();
    }
    Ok(())
}
