#!/usr/bin/env python3
"""Markdown tables from the JSON lines bench/rtp_load.sh collects (one per
rtp_load run). "Added" latency is the relay's one-way latency quantile minus
the no-relay baseline's at the same number of calls."""

import json
import sys

LOSS_TARGET = 0.01  # percent
P99_TARGET_US = 1000.0


def fmt(v, nd=0):
    if v is None:
        return "n/a"
    if nd == 1 and v >= 999_999:
        return "> 1 s"  # the histogram ends at 1 s
    if nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def main(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    base = {r["calls_wanted"]: r for r in runs if r.get("mode") == "direct" and "failed" not in r}
    steps = sorted({r["calls_wanted"] for r in runs})
    print("| calls | target | up | packets/s | lost / sent | loss % | one-way p50 / p99 / max (us) "
          "| added p50 / p99 (us) | CPU % of a core | CPU us per packet | CPU us per call-second (100 packets) | RSS growth per call (bytes) | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    best = {}
    for n in steps:
        for r in [r for r in runs if r["calls_wanted"] == n]:
            mode = r["mode"]
            if "failed" in r:
                print(f"| {n:,} | {mode} | | | | | | | | | | | rtp_load failed (exit {r['failed']}) |")
                continue
            sent = sum(r["sent"])
            received = sum(r["received"])
            lost = sent - received
            lat = r["latency"]
            added = ("", "")
            b = base.get(n)
            if mode != "direct" and b and lat["p50_us"] is not None:
                added = (lat["p50_us"] - b["latency"]["p50_us"], lat["p99_us"] - b["latency"]["p99_us"])
            notes = []
            for key, label in [("misrouted", "misrouted"), ("malformed", "malformed"),
                               ("duplicates", "duplicates"), ("send_errors", "send errors"),
                               ("generator_socket_drops", "generator socket drops"),
                               ("netns_udp_rcvbuf_errors", "netns rcvbuf drops"),
                               ("setup_errors", "setup errors")]:
                if r.get(key):
                    notes.append(f"{label} {r[key]:,}")
            if r["calls_up"] < n:
                notes.append(f"only {r['calls_up']} of {n} calls up")
            td = r.get("teardown") or {}
            if td.get("byes_from_target_during_run"):
                notes.append(f"target sent {td['byes_from_target_during_run']} BYEs")
            if td.get("bye_unanswered"):
                notes.append(f"{td['bye_unanswered']} BYEs unanswered")
            if r.get("generator_stalls"):
                notes.append(f"generator stalled {r['generator_stalls']}x, {r['generator_stalled_ms']:.0f} ms in all")
            notes.append(f"generator {r['generator_cpu_pct']:.0f}% CPU, lag max {r['max_send_lag_ms']:.1f} ms, load {r.get('load_avg', '?')}")
            print(
                f"| {n:,} | {mode} | {r['calls_up']:,} | {r['offered_pps']:,} | {lost:,} / {sent:,} "
                f"| {r['loss_pct']:.4f} | {fmt(lat['p50_us'], 1)} / {fmt(lat['p99_us'], 1)} / {fmt(lat['max_us'], 0)} "
                f"| {fmt(added[0], 1) if added[0] != '' else '-'} / {fmt(added[1], 1) if added[1] != '' else '-'} "
                f"| {fmt(r.get('target_cpu_pct'), 1)} | {fmt(r.get('target_cpu_us_per_packet'), 2)} | {fmt(r.get('target_cpu_us_per_call_second'), 0)} "
                f"| {fmt(r.get('bytes_per_call'))} | {'; '.join(notes)} |"
            )
            ok = (r["calls_up"] == n and r["loss_pct"] < LOSS_TARGET
                  and added[1] != "" and lat["p99_us"] - (b["latency"]["p99_us"] if b else 0) < P99_TARGET_US)
            if mode != "direct" and ok:
                best[mode] = max(best.get(mode, 0), n)
    print()
    for mode in sorted({r["mode"] for r in runs} - {"direct"}):
        print(f"- {mode}: highest N with all calls up, loss under {LOSS_TARGET}% and added p99 under "
              f"{P99_TARGET_US:.0f} us: **{best.get(mode, 'none')}**")


if __name__ == "__main__":
    main(sys.argv[1])
