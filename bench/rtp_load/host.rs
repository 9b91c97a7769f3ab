//! The SRTP load (issue 14) through handoff's relay without SIP: this
//! process, started again as a child (`--mode serve`), hosts the relays on
//! a tokio runtime like handoff's, so its CPU is the relays' alone.
//!
//! Each load call is a chain of two `MediaRelay`s, so both generator ends
//! stay plain and the packets are checked as in every other mode:
//!
//! ```text
//! caller end ── plain ── [X: plain | SRTP] ── SRTP ── [Y: SRTP | plain] ── plain ── far end
//! ```
//!
//! Every packet is relayed twice and, with `--srtp`, encrypted once and
//! decrypted once; without, the same chain plain is the reference. The
//! child prints one `caller_dst far_dst` line per call, then `ready`, and
//! stops when its stdin closes.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};

use handoff::media::relay::{MediaRelay, PortPool, RelayConfig, RelayLeg, Remote};
use handoff::media::srtp::{LegSrtp, SrtpKey, SrtpSuite};

use super::rtp::{CallPath, Endpoints};

/// The child's side: start `calls` chains towards the generator's
/// endpoints (given as `caller far` address lines on stdin first), print
/// the paths, relay until stdin closes.
pub fn serve(calls: usize, srtp: bool, port_min: u16, port_max: u16) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut ends = Vec::with_capacity(calls);
    for _ in 0..calls {
        let line = lines
            .next()
            .ok_or("stdin closed before every call's endpoints")?
            .map_err(|e| e.to_string())?;
        let mut it = line.split_whitespace().map(str::parse::<SocketAddr>);
        match (it.next(), it.next()) {
            (Some(Ok(caller)), Some(Ok(far))) => ends.push((caller, far)),
            _ => return Err(format!("bad endpoint line {line:?}")),
        }
    }
    let pool = PortPool::new("127.0.0.1".parse().map_err(|_| "ip")?, port_min, port_max)
        .map_err(|e| e.to_string())?;
    let _guard = runtime.enter();
    let mut relays = Vec::with_capacity(calls * 2);
    let mut out = std::io::stdout().lock();
    for (caller, far) in ends {
        let pair = || pool.allocate().map_err(|e| e.to_string());
        let (x_caller, x_far, y_caller, y_far) = (pair()?, pair()?, pair()?, pair()?);
        let caller_dst = x_caller.rtp_addr();
        let far_dst = y_far.rtp_addr();
        let x_far_remote = Remote::new(y_caller.rtp_addr()).with_rtcp(y_caller.rtcp_addr());
        let y_caller_remote = Remote::new(x_far.rtp_addr()).with_rtcp(x_far.rtcp_addr());
        let mut x_far_leg = RelayLeg::new(x_far, x_far_remote);
        let mut y_caller_leg = RelayLeg::new(y_caller, y_caller_remote);
        if srtp {
            let (x_to_y, y_to_x) = (
                SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80),
                SrtpKey::generate(SrtpSuite::AesCm128HmacSha1_80),
            );
            x_far_leg = x_far_leg.srtp(LegSrtp {
                receive: y_to_x.clone(),
                send: x_to_y.clone(),
            });
            y_caller_leg = y_caller_leg.srtp(LegSrtp {
                receive: x_to_y,
                send: y_to_x,
            });
        }
        let config = || RelayConfig {
            timeout: std::time::Duration::ZERO,
            ..RelayConfig::default()
        };
        let (x, _) = MediaRelay::start(
            config(),
            RelayLeg::new(x_caller, Remote::new(caller)),
            x_far_leg,
        )
        .map_err(|e| e.to_string())?;
        let (y, _) = MediaRelay::start(
            config(),
            y_caller_leg,
            RelayLeg::new(y_far, Remote::new(far)),
        )
        .map_err(|e| e.to_string())?;
        relays.push(x);
        relays.push(y);
        writeln!(out, "{caller_dst} {far_dst}").map_err(|e| e.to_string())?;
    }
    writeln!(out, "ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    // Relay until the generator closes stdin.
    for _ in lines {}
    runtime.block_on(async {
        for r in relays {
            let _ = r.stop().await;
        }
    });
    Ok(())
}

/// The generator's side: the child hosting the chains, and the paths.
pub struct Host {
    child: Child,
    // Open while the host runs: its closing stops the host.
    stdin: Option<ChildStdin>,
}

impl Host {
    pub fn start(
        calls: usize,
        srtp: bool,
        ports: (u16, u16),
        ep: &Endpoints,
    ) -> Result<(Host, Vec<CallPath>), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.args(["--mode", "serve", "--calls", &calls.to_string()])
            .args([
                "--port-min",
                &ports.0.to_string(),
                "--port-max",
                &ports.1.to_string(),
            ]);
        if srtp {
            cmd.arg("--srtp");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("relay host: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        for c in 0..calls {
            writeln!(stdin, "{} {}", ep.caller_addr(c), ep.far_addr(c))
                .map_err(|e| e.to_string())?;
        }
        stdin.flush().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut paths = Vec::with_capacity(calls);
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if line == "ready" {
                break;
            }
            let mut it = line.split_whitespace().map(str::parse::<SocketAddr>);
            match (it.next(), it.next()) {
                (Some(Ok(caller_dst)), Some(Ok(far_dst))) => paths.push(CallPath {
                    caller_dst,
                    far_dst,
                }),
                _ => return Err(format!("relay host said {line:?}")),
            }
        }
        Ok((
            Host {
                child,
                stdin: Some(stdin),
            },
            paths,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the host by its PID and wait for it (also when dropped).
    pub fn stop(self) {}
}

impl Drop for Host {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
