#!/usr/bin/env bash
# Load benchmark of the voice-prefetch webhook: with HOLD_CALLS SIP calls live
# (each caller a different phone), wrk drives POST /backend/zendesk-v2/voice-prefetch/
# with bodies naming those phones, while a second SIPp carrier keeps placing short
# calls; the SIP calls must all succeed. See BENCHMARKS.md.
#
#   bench/webhook_load.sh
#
# Tunables (environment): HOLD_CALLS (200), WRK_SECS (20), WRK_THREADS (1),
# WRK_CONNS (32), SIP_RATE (50 calls/s during the run), HANDOFF_BIN (skip the build).
# Needs wrk (apt-get install wrk), sipp (apt-get install sip-tester), python3, ss.
# Everything on 127.0.0.1, every port a random free one, every process stopped by PID.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SCENARIOS=$ROOT/sipp-scenarios

HOLD_CALLS=${HOLD_CALLS:-200}
WRK_SECS=${WRK_SECS:-20}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-32}
SIP_RATE=${SIP_RATE:-50}
CALLED=+18005550100
SECRET=bench-signing-secret-0123456789

for tool in wrk sipp python3 ss; do
	command -v "$tool" >/dev/null || {
		case $tool in
		wrk) echo "wrk not found: apt-get install wrk" >&2 ;;
		sipp) echo "sipp not found: apt-get install sip-tester (SIPp 3.6)" >&2 ;;
		*) echo "$tool not found" >&2 ;;
		esac
		exit 1
	}
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/handoff-webhook-bench.XXXXXX")
RESULTS_DIR=$HERE/results
RESULT_FILE=$RESULTS_DIR/webhook-$STAMP.md
mkdir -p "$RESULTS_DIR"

log() { echo "[webhook_load $(date +%T)] $*" >&2; }

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

PIDS=()
cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}"
	done
	log "work files in $WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- handoff ------------------------------------------------------------------
BIN=${HANDOFF_BIN:-}
if [[ -z $BIN ]]; then
	log "cargo build --release in $ROOT"
	(cd "$ROOT" && cargo build --release --quiet) >&2
	BIN=$ROOT/target/release/handoff
fi
UAS_PORT=$(free_port)
cat >"$WORK/handoff.toml" <<EOF
[sip]
listen_udp = ["127.0.0.1:0"]
listen_tcp = []

[limits]
# The default media range (20000..59999) holds 10,000 calls.
max_calls = 10000
max_calls_per_second = 5000

[log]
level = "warn"

[http]
listen = "127.0.0.1:0"

[[http.signing_keys]]
kid = "bench"
secret = "$SECRET"
issuer = "bench"

[[route]]
prefix = ""
org_id = "org-bench"
agent_id = "agent-bench"
ai_agent_uri = "sip:ai@127.0.0.1:$UAS_PORT"
EOF
"$BIN" run --config "$WORK/handoff.toml" >"$WORK/handoff.out" 2>"$WORK/handoff.err" &
HANDOFF_PID=$!
PIDS+=("$HANDOFF_PID")
# The http line comes after the SIP ones.
HTTP_ADDR=$(wait_line "$WORK/handoff.out" "listening http " "$HANDOFF_PID" "$WORK/handoff.err")
SIP_ADDR=$(wait_line "$WORK/handoff.out" "listening udp " "$HANDOFF_PID")
URL=$("$BIN" webhook-url --org org-bench --config "$WORK/handoff.toml")
WEBHOOK_PATH=/${URL#*://*/}
log "handoff: sip udp $SIP_ADDR, http $HTTP_ADDR"

# --- the AI agent (stock UAS) and the carriers ---------------------------------
sipp -sn uas -i 127.0.0.1 -p "$UAS_PORT" -cp "$(free_port)" -mp "$(free_media_port)" -t u1 -nostdin \
	>/dev/null 2>"$WORK/uas.err" &
PIDS+=("$!")
for ((i = 0; i < 100; i++)); do
	[[ -n $(ss -Hlun "sport = :$UAS_PORT") ]] && break
	sleep 0.1
done

# Held calls: one phone each, from a SIPp injection file.
{
	echo SEQUENTIAL
	for ((i = 0; i < HOLD_CALLS; i++)); do printf '+1415556%04d;\n' "$i"; done
} >"$WORK/callers.csv"
grep -v 'X-OPENCX-SESSION-ID: spoofed' "$SCENARIOS/carrier_uac.xml" >"$WORK/uac_basic.xml"
sed 's/+14155551212/[field0]/g' "$WORK/uac_basic.xml" >"$WORK/uac_held.xml"

HOLD_MS=$(((WRK_SECS + 30) * 1000))
# shellcheck disable=SC2046
timeout -k 5 "$((WRK_SECS + 90))" sipp "$SIP_ADDR" -sf "$WORK/uac_held.xml" -inf "$WORK/callers.csv" \
	-i 127.0.0.1 $(sipp_ports) -t u1 -nostdin -s "$CALLED" \
	-r 100 -m "$HOLD_CALLS" -l "$HOLD_CALLS" -d "$HOLD_MS" -recv_timeout 5000 \
	>/dev/null 2>"$WORK/held.err" &
HELD_PID=$!
PIDS+=("$HELD_PID")

metric() { # name{labels} -> value from /metrics
	python3 - "$HTTP_ADDR" "$1" <<'EOF'
import sys, urllib.request
addr, name = sys.argv[1], sys.argv[2]
for line in urllib.request.urlopen(f"http://{addr}/metrics").read().decode().splitlines():
    if line.startswith(name + " "):
        print(line.split()[-1]); break
else:
    print(0)
EOF
}
for ((i = 0; i < 150; i++)); do
	[[ $(metric 'handoff_sessions{state="live"}') -ge $HOLD_CALLS ]] && break
	sleep 0.2
done
LIVE=$(metric 'handoff_sessions{state="live"}')
log "$LIVE calls live"
[[ $LIVE -ge $HOLD_CALLS ]] || {
	log "only $LIVE of $HOLD_CALLS calls came up"
	exit 1
}

# Short calls all through the webhook run; SIPp exits non-zero on any failed call.
SIP_CALLS=$((SIP_RATE * WRK_SECS))
# shellcheck disable=SC2046
timeout -k 5 "$((WRK_SECS + 60))" sipp "$SIP_ADDR" -sf "$WORK/uac_basic.xml" \
	-i 127.0.0.1 $(sipp_ports) -t u1 -nostdin -s "$CALLED" \
	-r "$SIP_RATE" -m "$SIP_CALLS" -d 500 -recv_timeout 5000 \
	-trace_stat -stf "$WORK/traffic.csv" -fd 1 \
	>/dev/null 2>"$WORK/traffic.err" &
TRAFFIC_PID=$!
PIDS+=("$TRAFFIC_PID")

# wrk: each request names one held caller's phone, ticket id fixed per phone, so the
# first request per phone stamps and the rest are idempotent repeats.
cat >"$WORK/prefetch.lua" <<EOF
local reqs = {}
init = function(args)
  for i = 0, $((HOLD_CALLS - 1)) do
    local body = string.format('{"ticket_id": %d, "caller_phone": "+1415556%04d", "requester_phone": "", "subject": "Call"}', 500000 + i, i)
    reqs[#reqs + 1] = wrk.format("POST", "$WEBHOOK_PATH", {["Content-Type"] = "application/json"}, body)
  end
end
local n = 0
request = function()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end
EOF
WRK_CMD=(wrk -t "$WRK_THREADS" -c "$WRK_CONNS" -d "${WRK_SECS}s" --latency -s "$WORK/prefetch.lua" "http://$HTTP_ADDR")
log "${WRK_CMD[*]}"
"${WRK_CMD[@]}" | tee "$WORK/wrk.out" >&2

TRAFFIC_RC=0
wait "$TRAFFIC_PID" || TRAFFIC_RC=$?
TRAFFIC_OK=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "SuccessfulCall(C)") c = i; next } { v = $c } END { print v + 0 }' "$WORK/traffic.csv")
TRAFFIC_FAILED=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "FailedCall(C)") c = i; next } { v = $c } END { print v + 0 }' "$WORK/traffic.csv")
STAMPED=$(metric 'handoff_webhook_requests_total{outcome="stamped"}')
REPEATS=$(metric 'handoff_webhook_requests_total{outcome="already_stamped"}')
NONE=$(metric 'handoff_webhook_requests_total{outcome="no_session"}')
RPS=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.out")
P50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk.out")
P99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.out")
NON2XX=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.out")

{
	echo "## Webhook load, $STAMP"
	echo
	echo "- command: \`bench/webhook_load.sh\` (HOLD_CALLS=$HOLD_CALLS WRK_SECS=$WRK_SECS WRK_THREADS=$WRK_THREADS WRK_CONNS=$WRK_CONNS SIP_RATE=$SIP_RATE)"
	echo "- wrk: \`${WRK_CMD[*]}\` ($(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2))"
	echo "- machine: $(nproc) cores, $(uname -sr)"
	echo
	echo "| live calls | requests/s | p50 | p99 | non-2xx | stamped | idempotent repeats | no session | SIP calls during run | SIP failures |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	echo "| $LIVE | $RPS | $P50 | $P99 | ${NON2XX:-0} | $STAMPED | $REPEATS | $NONE | $TRAFFIC_OK | $TRAFFIC_FAILED (sipp exit $TRAFFIC_RC) |"
} | tee "$RESULT_FILE"
log "results in $RESULT_FILE"
