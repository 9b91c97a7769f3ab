#!/usr/bin/env python3
"""Figures for bench/transfer_load.sh, one step at a time.

  transfer_stats.py metrics BEFORE.prom AFTER.prom
      handoff's transfer counters and the REFER -> INVITE histogram
      (handoff_transfer_setup_seconds) over the step: the difference of two
      /metrics scrapes. p50/p99 are interpolated linearly inside the bucket
      the rank falls in, so they are only as fine as the buckets.

  transfer_stats.py pcap FILE AI_PORT HANDOFF_PORT ZENDESK_PORT
      The same latency measured on the wire, from a loopback capture of the
      INVITEs to the AI agent, the REFERs to handoff and the INVITEs to
      Zendesk (tcpdump -i lo, nanosecond timestamps). The AI leg's INVITE
      ties its Call-ID to the session id; the REFER comes in that Call-ID;
      the transfer INVITE carries the session id. Latency: first transfer
      INVITE out minus first REFER in (retransmissions ignored).

Both print key=value lines; latencies are in microseconds.
"""

import math
import struct
import sys

HIST = "handoff_transfer_setup_seconds"
COUNTERS = [
    "refers_received_total",
    "refers_refused_total",
    "transfers_total",
    "transfers_succeeded_total",
    "transfers_failed_total",
    "calls_started_total",
    "calls_failed_total",
    "transaction_timeouts_total",
    "sip_send_errors_total",
    "sip_messages_dropped_total",
]


def read_prom(path):
    values, buckets = {}, []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            if name.startswith(HIST + "_bucket{le=\""):
                le = name[len(HIST) + 12 : -2]
                buckets.append((math.inf if le == "+Inf" else float(le), float(value)))
            else:
                values[name] = float(value)
    return values, buckets


def percentile_from_buckets(bounds, counts, q):
    """Linear interpolation inside the bucket holding rank q * total."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cum, lower = 0.0, 0.0
    for upper, c in zip(bounds, counts):
        if c > 0 and cum + c >= rank:
            if math.isinf(upper):
                return math.inf
            return lower + (upper - lower) * (rank - cum) / c
        cum += c
        lower = upper
    return bounds[-1]


def fmt_us(seconds):
    if seconds is None:
        return "n/a"
    if math.isinf(seconds):
        return "inf"
    return f"{seconds * 1e6:.0f}"


def metrics(before_path, after_path):
    v0, b0 = read_prom(before_path)
    v1, b1 = read_prom(after_path)
    for name in COUNTERS:
        key = "handoff_" + name
        print(f"{name}={v1.get(key, 0) - v0.get(key, 0):.0f}")
    bounds = [b for b, _ in b1]
    cum0 = dict(b0)
    cum = [c - cum0.get(b, 0) for b, c in b1]
    counts = [c - (cum[i - 1] if i else 0) for i, c in enumerate(cum)]
    n = cum[-1] if cum else 0
    total_s = v1.get(HIST + "_sum", 0) - v0.get(HIST + "_sum", 0)
    print(f"hist_count={n:.0f}")
    print(f"hist_p50_us={fmt_us(percentile_from_buckets(bounds, counts, 0.50))}")
    print(f"hist_p99_us={fmt_us(percentile_from_buckets(bounds, counts, 0.99))}")
    print(f"hist_mean_us={fmt_us(total_s / n) if n else 'n/a'}")
    top = max((b for b, c in zip(bounds, counts) if c > 0), default=None)
    print(f"hist_max_le_us={fmt_us(top)}")
    over = sum(c for b, c in zip(bounds, counts) if b > 0.001)
    print(f"hist_over_1ms={over:.0f}")
    # The bucket bounds around 1 ms, for the report's resolution note.
    print("hist_bounds_us=" + ",".join(fmt_us(b) for b in bounds if b <= 0.002))


def packets(path):
    """(timestamp in s, src port, dst port, UDP payload) of an Ethernet/IPv4 pcap."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    else:
        endian = ">"
        magic = struct.unpack(">I", data[:4])[0]
    frac = 1e-9 if magic == 0xA1B23C4D else 1e-6
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 276: 20}.get(linktype, 14)
    off = 24
    while off + 16 <= len(data):
        sec, sub, incl, _ = struct.unpack(endian + "IIII", data[off : off + 16])
        pkt = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ip = pkt[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        udp = ip[ihl:]
        if len(udp) < 8:
            continue
        sport, dport = struct.unpack(">HH", udp[:4])
        yield sec + sub * frac, sport, dport, udp[8:]


def headers(payload):
    text = payload.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = text.split("\r\n")
    out = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out.setdefault(name.strip().lower(), value.strip())
    return lines[0], out


def pcap(path, ai_port, handoff_port, zendesk_port):
    ai_port, handoff_port, zendesk_port = int(ai_port), int(handoff_port), int(zendesk_port)
    session_of_call = {}  # AI leg Call-ID -> session id
    refer_at = {}  # AI leg Call-ID -> first REFER seen
    invite_at = {}  # session id -> first transfer INVITE seen
    n = 0
    for ts, _sport, dport, payload in packets(path):
        n += 1
        start, h = headers(payload)
        call_id = h.get("call-id") or h.get("i")
        if start.startswith("INVITE ") and dport == ai_port:
            sid = h.get("x-opencx-session-id")
            if call_id and sid:
                session_of_call.setdefault(call_id, sid)
        elif start.startswith("REFER ") and dport == handoff_port:
            if call_id:
                refer_at.setdefault(call_id, ts)
        elif start.startswith("INVITE ") and dport == zendesk_port:
            sid = h.get("x-opencx-session-id")
            if sid:
                invite_at.setdefault(sid, ts)
    lat = []
    for call_id, t in refer_at.items():
        sid = session_of_call.get(call_id)
        if sid in invite_at:
            lat.append(invite_at[sid] - t)
    lat.sort()

    def q(p):
        return lat[max(0, math.ceil(p * len(lat)) - 1)] if lat else None

    print(f"pcap_packets={n}")
    print(f"pcap_refers={len(refer_at)}")
    print(f"pcap_matched={len(lat)}")
    print(f"pcap_p50_us={fmt_us(q(0.50))}")
    print(f"pcap_p99_us={fmt_us(q(0.99))}")
    print(f"pcap_max_us={fmt_us(lat[-1] if lat else None)}")
    print(f"pcap_over_1ms={sum(1 for x in lat if x > 0.001)}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "metrics" and len(args) == 2:
        metrics(*args)
    elif cmd == "pcap" and len(args) == 4:
        pcap(*args)
    else:
        sys.exit(__doc__)
