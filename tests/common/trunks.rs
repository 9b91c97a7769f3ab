//! Trunk (source ACL) rigs: handoff with `[[trunk]]` entries, callers and an AI
//! agent bound to chosen loopback addresses (Linux answers for all of 127/8, so
//! 127.0.0.7 plays a host outside every trunk).

use super::{config_text, start_with_config, Rig, TestUa, Transport};
use handoff::metrics::Metrics;
use handoff::server::Server;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

/// The carrier trunk every trunk test configures: 127.0.0.1 only.
pub const CARRIER_TRUNK: &str = "[[trunk]]\nname = \"carrier\"\nsources = [\"127.0.0.1/32\"]\n";

/// A UDP UA on `ip` (a free port) that sends to handoff.
pub async fn udp_ua_on(ip: Ipv4Addr, handoff: SocketAddr) -> TestUa {
    let mut ua = TestUa::udp_bound(SocketAddr::from((ip, 0))).await;
    ua.set_peer(handoff);
    ua
}

/// Handoff over UDP with its AI agent on `agent_ip`, the caller on `caller_ip`.
/// `keys` are dotted keys (may be empty); `tables` the `[[trunk]]` (and other)
/// tables; `route_extra` lines added to the one default route.
pub async fn trunk_rig(
    agent_ip: Ipv4Addr,
    caller_ip: Ipv4Addr,
    keys: &str,
    tables: &str,
    route_extra: &str,
) -> Rig {
    let agent = TestUa::udp_bound(SocketAddr::from((agent_ip, 0))).await;
    let uri = format!("sip:ai@{}", agent.local_addr());
    trunk_rig_with(
        agent,
        &uri,
        caller_ip,
        keys,
        &format!("{tables}\n"),
        route_extra,
    )
    .await
}

/// The same with a given AI agent UA reached at `ai_uri` (a host name, say).
pub async fn trunk_rig_with(
    agent: TestUa,
    ai_uri: &str,
    caller_ip: Ipv4Addr,
    keys: &str,
    tables: &str,
    route_extra: &str,
) -> Rig {
    let route = format!(
        "[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\n\
         ai_agent_uri = \"{ai_uri}\"\n{route_extra}\n"
    );
    let extra = format!("{keys}\n{tables}{route}");
    let text = config_text(Transport::Udp, agent.local_addr().port(), &extra);
    let server = start_with_config(&text).await;
    let caller = udp_ua_on(caller_ip, server.udp_addrs()[0]).await;
    Rig {
        server,
        caller,
        agent,
        transport: Transport::Udp,
    }
}

/// `handoff_sip_untrusted_dropped_total`.
pub fn untrusted_dropped(server: &Server) -> u64 {
    Metrics::get(&server.metrics().sip_untrusted_dropped_total)
}

/// A trunk's (calls started, rejected by its limits, active).
pub fn trunk_counts(server: &Server, trunk: &str) -> (u64, u64, i64) {
    let c = server
        .metrics()
        .trunks
        .by_name(trunk)
        .unwrap_or_else(|| panic!("no metrics for trunk {trunk:?}"));
    (
        c.calls_started_total.load(Ordering::Relaxed),
        c.calls_rejected_limit_total.load(Ordering::Relaxed),
        c.calls_active.load(Ordering::Relaxed),
    )
}
