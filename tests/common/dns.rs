//! A fake DNS server on a random loopback UDP port, serving a fixed zone, each
//! answer after an optional delay, and counting the queries it got. Built on
//! hickory-proto's message types; handoff finds it through `sip.dns_servers`.

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

/// The TTL of every record served.
const TTL: u32 = 60;

pub struct FakeDns {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    task: AbortHandle,
}

/// A zone: names and their records.
#[derive(Default, Clone)]
pub struct Zone {
    records: Vec<Record>,
}

fn name(n: &str) -> Name {
    let fqdn = if n.ends_with('.') {
        n.to_owned()
    } else {
        format!("{n}.")
    };
    Name::from_ascii(&fqdn).unwrap_or_else(|e| panic!("bad DNS name {n:?}: {e}"))
}

impl Zone {
    pub fn a(mut self, host: &str, ip: Ipv4Addr) -> Self {
        self.records
            .push(Record::from_rdata(name(host), TTL, RData::A(A(ip))));
        self
    }

    /// An SRV record: `owner` is the whole name (`_sip._udp.ai.test`).
    pub fn srv(mut self, owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Self {
        let rdata = RData::SRV(SRV::new(priority, weight, port, name(target)));
        self.records
            .push(Record::from_rdata(name(owner), TTL, rdata));
        self
    }
}

impl FakeDns {
    /// Serve `zone`, each answer `delay` after its query.
    pub async fn start(zone: Zone, delay: Duration) -> FakeDns {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("fake DNS binds");
        let addr = sock.local_addr().expect("fake DNS address");
        let sock = Arc::new(sock);
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        let zone = Arc::new(zone);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                counted.fetch_add(1, Ordering::Relaxed);
                let reply = answer(&zone, &query);
                let sock = sock.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = sock.send_to(&reply, from).await;
                });
            }
        })
        .abort_handle();
        FakeDns {
            addr,
            queries,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received so far (one per name and type asked).
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }

    /// The configuration line that points handoff at this server.
    pub fn config_key(&self) -> String {
        format!("sip.dns_servers = [\"{}\"]\n", self.addr)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply to `query`: its records of the type asked, NXDOMAIN for a name the
/// zone does not have, an empty NOERROR for a type the name has none of.
fn answer(zone: &Zone, query: &Message) -> Vec<u8> {
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let mut known = false;
    for q in &query.queries {
        reply.add_query(q.clone());
        for r in zone.records.iter().filter(|r| r.name == q.name) {
            known = true;
            if q.query_type == r.record_type() || q.query_type == RecordType::ANY {
                reply.add_answer(r.clone());
            }
        }
    }
    if !known {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply.to_vec().expect("DNS reply encodes")
}

/// handoff with its AI agent at `ai_uri`, asking `dns` for host names; the carrier
/// and the agent over `transport`.
pub async fn rig_with_dns(
    transport: super::Transport,
    agent: super::TestUa,
    dns: &FakeDns,
    ai_uri: &str,
) -> super::Rig {
    let extra = format!(
        "{}\n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\nai_agent_uri = \"{ai_uri}\"\n",
        dns.config_key()
    );
    let server = super::start_handoff(transport, agent.local_addr().port(), &extra).await;
    let caller = super::TestUa::carrier(transport, super::handoff_addr(&server, transport)).await;
    super::Rig {
        server,
        caller,
        agent,
        transport,
    }
}
