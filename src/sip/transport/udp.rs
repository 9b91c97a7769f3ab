//! The UDP side: one socket per configured address, one receive loop each.

use super::{deliver, Peer, TransportLayer};
use crate::metrics::Metrics;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;

/// Kernel buffers big enough to ride out a burst of a few thousand calls per second.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Best effort: the kernel may cap these (net.core.rmem_max).
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

pub(super) async fn receive_loop(
    sock: Arc<UdpSocket>,
    layer: Arc<TransportLayer>,
    max_message: usize,
) {
    let metrics = layer.metrics.clone();
    // One byte more than the limit, so that an oversize datagram is seen as such.
    let mut buf = vec![0u8; max_message.saturating_add(1).min(65536)];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors surface here on some systems; the socket stays usable.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        if n > max_message {
            Metrics::inc(&metrics.sip_messages_dropped_total);
            tracing::debug!(%from, size = n, "udp datagram over max_message_size dropped");
            continue;
        }
        let data = &buf[..n];
        // Keep-alive datagrams (CRLF runs) carry no message.
        if data.iter().all(|b| *b == b'\r' || *b == b'\n' || *b == 0) {
            continue;
        }
        deliver(&layer, Bytes::copy_from_slice(data), Peer::udp(from));
    }
}
