#!/usr/bin/env bash
# Outbound calls under load, beside inbound calls in the same run: one handoff
# (release build, media passthrough: signalling only) takes, at each rate,
# STEP_SECS of inbound calls (carrier SIPp UAC on 127.0.0.1 -> handoff -> AI
# agent SIPp stock UAS) and then STEP_SECS of outbound calls (AI agent SIPp UAC
# on 127.0.0.2, an ai_agent trunk -> handoff -> carrier SIPp stock UAS on
# 127.0.0.3, a carrier trunk with [trunk.outbound]). Reports per direction the
# calls attempted, succeeded, failed and handoff's CPU seconds per 1,000 calls.
# Every port a random free one, every process stopped by PID on exit.
#
#   bench/outbound_load.sh            # cargo build --release first
#   HANDOFF_BIN=path bench/outbound_load.sh
#
# Tunables: RATES (default "100 250 500"), STEP_SECS (10), SETTLE_SECS (3).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SCENARIOS=$ROOT/sipp-scenarios
RATES=${RATES:-"100 250 500"}
STEP_SECS=${STEP_SECS:-10}
SETTLE_SECS=${SETTLE_SECS:-3}
command -v sipp >/dev/null || {
	echo "sipp not found: apt-get install sip-tester (SIPp 3.6)" >&2
	exit 1
}
CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/handoff-bench-outbound.XXXXXX")
log() { echo "[outbound_load $(date +%T)] $*" >&2; }

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
PIDS=()
cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}" 5
	done
	log "work files in $WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cpu_ticks() { sed 's/^.*) //' "/proc/$HANDOFF_PID/stat" | awk '{print $12 + $13}'; }
csv_last() {
	awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		{ last = $c } END { print (c && last != "" ? last : 0) }' "$1" 2>/dev/null || echo 0
}

# --- the two UASs: the AI agent (inbound) and the carrier (outbound) ----------
start_uas() { # ip port name
	sipp -sn uas -i "$1" -p "$2" -cp "$(free_port)" -mp "$(free_media_port)" -t u1 -nostdin \
		>/dev/null 2>"$WORK/$3.err" &
	PIDS+=("$!")
}
AI_PORT=$(free_port)
CARRIER_PORT=$(free_port)
start_uas 127.0.0.1 "$AI_PORT" ai_uas
start_uas 127.0.0.3 "$CARRIER_PORT" carrier_uas

# --- handoff -------------------------------------------------------------------
BIN=${HANDOFF_BIN:-}
if [[ -z $BIN ]]; then
	log "cargo build --release in $ROOT"
	(cd "$ROOT" && cargo build --release --quiet) >&2
	BIN=$ROOT/target/release/handoff
fi
cat >"$WORK/handoff.toml" <<EOF
[sip]
listen_udp = ["127.0.0.1:0"]
[limits]
max_calls = 20000
max_calls_per_second = 5000
[log]
level = "warn"
[http]
listen = "127.0.0.1:0"
[media]
mode = "passthrough"

[[trunk]]
name = "carrier"
sources = ["127.0.0.1", "127.0.0.3"]
[trunk.outbound]
uri = "sip:127.0.0.3:$CARRIER_PORT"

[[trunk]]
name = "agents"
kind = "ai_agent"
sources = ["127.0.0.2"]
org_id = "org-bench"

[[outbound]]
org_id = "org-bench"
trunk = "carrier"
allowed_prefixes = ["+1415"]
caller_ids = ["+18005550100"]

[[route]]
prefix = ""
org_id = "org-bench"
agent_id = "agent-bench"
ai_agent_uri = "sip:ai@127.0.0.1:$AI_PORT"
EOF
"$BIN" run --config "$WORK/handoff.toml" >"$WORK/handoff.out" 2>"$WORK/handoff.err" &
HANDOFF_PID=$!
PIDS+=("$HANDOFF_PID")
TARGET=$(wait_line "$WORK/handoff.out" "listening udp " "$HANDOFF_PID" "$WORK/handoff.err")

# --- the UAC scenarios: basic calls, no spoofed header -------------------------
grep -v 'X-OPENCX-SESSION-ID: spoofed' "$SCENARIOS/carrier_uac.xml" >"$WORK/inbound.xml"
sed -e 's/X-OPENCX-SESSION-ID: spoofed/X-OPENCX-AGENT-ID: agent-bench/' \
	"$SCENARIOS/carrier_uac.xml" >"$WORK/outbound.xml"

step() { # direction rate -> one table row
	local dir=$1 rate=$2 calls ip called cpu0 cpu1 ok bad cpu_s per1k
	calls=$((rate * STEP_SECS))
	if [[ $dir == inbound ]]; then ip=127.0.0.1 called=+18005550100; else ip=127.0.0.2 called=+14155550123; fi
	cpu0=$(cpu_ticks)
	# shellcheck disable=SC2046
	timeout -k 5 "$((STEP_SECS + 60))" sipp "$TARGET" -sf "$WORK/$dir.xml" -i "$ip" $(sipp_ports) \
		-t u1 -nostdin -s "$called" -r "$rate" -m "$calls" -l "$((rate * 2))" -d 0 \
		-recv_timeout 5000 -timeout "$((STEP_SECS + 50))s" -timeout_error \
		-trace_stat -stf "$WORK/$dir-$rate.csv" -fd 1 >/dev/null 2>"$WORK/$dir-$rate.err" || true
	sleep "$SETTLE_SECS"
	cpu1=$(cpu_ticks)
	ok=$(csv_last "$WORK/$dir-$rate.csv" 'SuccessfulCall(C)')
	bad=$(csv_last "$WORK/$dir-$rate.csv" 'FailedCall(C)')
	cpu_s=$(awk -v t="$((cpu1 - cpu0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
	per1k=$(awk -v c="$cpu_s" -v n="$ok" 'BEGIN { if (n > 0) printf "%.3f", c / (n / 1000); else print "n/a" }')
	log "$dir $rate/s: ok=$ok failed=$bad cpu=${cpu_s}s per1000=$per1k"
	echo "| $dir | $rate | $calls | $ok | $bad | $cpu_s | $per1k |"
}

{
	echo "| direction | offered calls/s | calls | successful | failed | handoff CPU s | CPU s / 1000 calls |"
	echo "| --- | --- | --- | --- | --- | --- | --- |"
	for rate in $RATES; do
		step inbound "$rate"
		step outbound "$rate"
	done
} | tee "$WORK/result.md"
