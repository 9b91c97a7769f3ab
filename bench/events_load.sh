#!/usr/bin/env bash
# Lifecycle events under load (issue 7): SIPp basic calls through handoff at
# RATE calls/s, once without a subscriber and once with a local one
# (examples/event_sink.rs, which checks every signature and counts unique event
# ids), each on a fresh handoff with a fresh outbox file. Reports, per mode,
# the SIP figures (attempted, successful, failed calls), handoff's CPU per 1,000
# calls (all threads, and without the two event threads: what the SIP side
# spent), and events emitted vs delivered, duplicates and how long the outbox
# took to drain after the last call.
#
#   bench/events_load.sh            # cargo build --release (handoff, example), then run
#
# Carrier (SIPp UAC, sipp-scenarios/carrier_uac.xml without its spoofed header)
# -> handoff (media passthrough, like bench/sipp_load.sh) -> SIPp's stock UAS.
# Everything on 127.0.0.1, every port a random free one, every process stopped
# by PID on exit.
#
# Tunables (environment): RATE (1000), STEP_SECS (10), MODES ("off on"),
# DRAIN_SECS (120), HANDOFF_BIN, SINK_BIN (skip the build).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SCENARIOS=$ROOT/sipp-scenarios
RATE=${RATE:-1000}
STEP_SECS=${STEP_SECS:-10}
SETTLE_SECS=${SETTLE_SECS:-6}
MODES=${MODES:-"off on"}
DRAIN_SECS=${DRAIN_SECS:-120}
CALLED=+18005550100
SECRET=bench-subscriber-secret-0123456789

for tool in sipp python3 ss getconf curl; do
	command -v "$tool" >/dev/null || {
		echo "$tool not found${tool/sipp/: apt-get install sip-tester}" >&2
		exit 1
	}
done

CLK_TCK=$(getconf CLK_TCK)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/handoff-bench-events.XXXXXX")
RESULTS_DIR=$HERE/results
RESULT_FILE=$RESULTS_DIR/events-$STAMP.md
mkdir -p "$RESULTS_DIR"
log() { echo "[events_load $(date +%T)] $*" >&2; }

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

# --- binaries -----------------------------------------------------------------
BIN=${HANDOFF_BIN:-}
SINK=${SINK_BIN:-}
if [[ -z $BIN || -z $SINK ]]; then
	log "cargo build --release (handoff and examples/event_sink) in $ROOT"
	(cd "$ROOT" && cargo build --release --quiet --bin handoff --example event_sink) >&2
	BIN=${BIN:-$ROOT/target/release/handoff}
	SINK=${SINK:-$ROOT/target/release/examples/event_sink}
fi
VERSION="handoff $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes')"

# --- /proc figures -------------------------------------------------------------
thread_ticks() { # pid [events|sip|all] -> utime + stime of the matching threads
	local pid=$1 which=$2 t comm total=0 v
	for t in /proc/"$pid"/task/*; do
		comm=$(cat "$t/comm" 2>/dev/null) || continue
		case $which in
		events) [[ $comm == events-* ]] || continue ;;
		writer) [[ $comm == events-writer ]] || continue ;;
		sip) [[ $comm == events-* ]] && continue ;;
		esac
		v=$(sed 's/^.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
		total=$((total + ${v:-0}))
	done
	echo "$total"
}
proc_ticks() { # pid -> utime + stime of the whole process, exited threads included
	sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0
}
secs() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }
per1k() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { if (n > 0) printf "%.3f", t / hz / (n / 1000); else print "n/a" }'; }
csv_last() {
	awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		{ last = $c } END { print (c && last != "" ? last : 0) }' "$1" 2>/dev/null || echo 0
}
metric() { # http_addr name -> value (sum over label sets)
	curl -s "http://$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }'
}
sink_stat() { # key
	curl -s "http://$SINK_ADDR/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])" 2>/dev/null || echo 0
}

# --- processes ------------------------------------------------------------------
UAS_PORT=$(free_port)
UAC_SCENARIO=$WORK/carrier_uac_basic.xml
grep -v 'X-OPENCX-SESSION-ID: spoofed' "$SCENARIOS/carrier_uac.xml" >"$UAC_SCENARIO"

sipp -sn uas -i 127.0.0.1 -p "$UAS_PORT" -cp "$(free_port)" -mp "$(free_media_port)" -t u1 -nostdin \
	-trace_err -error_file "$WORK/uas_errors.log" >/dev/null 2>"$WORK/uas.err" &
PIDS+=("$!")
for ((i = 0; i < 100; i++)); do
	[[ -n $(ss -Hlun "sport = :$UAS_PORT") ]] && break
	sleep 0.1
done

start_sink() {
	rm -f "$WORK/sink.out" # never read the last run's address
	# nice +10: the sink stands in for a subscriber on another machine; it should
	# not take the cores from the SIP processes it is measured beside.
	nice -n 10 "$SINK" 127.0.0.1:0 "$SECRET" >"$WORK/sink.out" 2>"$WORK/sink.err" &
	SINK_PID=$!
	PIDS+=("$SINK_PID")
	SINK_ADDR=$(wait_line "$WORK/sink.out" "listening http " "$SINK_PID")
}

start_handoff() { # mode
	local mode=$1 hooks=""
	[[ $mode == on ]] && hooks="[[webhooks]]
url = \"http://$SINK_ADDR/hooks\"
secret = \"$SECRET\""
	rm -f "$WORK/handoff-$mode.db"*
	cat >"$WORK/handoff-$mode.toml" <<EOF2
[sip]
listen_udp = ["127.0.0.1:0"]
listen_tcp = ["127.0.0.1:0"]
[limits]
max_calls = 20000
max_calls_per_second = 5000
drain_timeout_secs = 2
[log]
level = "warn"
[http]
listen = "127.0.0.1:0"
[media]
mode = "passthrough"
[store]
path = "$WORK/handoff-$mode.db"
[events]
outbox_capacity = 1000000
$hooks

[[route]]
prefix = ""
org_id = "org-bench"
agent_id = "agent-bench"
ai_agent_uri = "sip:ai@127.0.0.1:$UAS_PORT"
EOF2
	rm -f "$WORK/handoff-$mode.out" # never read the last run's address
	"$BIN" run --config "$WORK/handoff-$mode.toml" >"$WORK/handoff-$mode.out" 2>"$WORK/handoff-$mode.err" &
	HANDOFF_PID=$!
	PIDS+=("$HANDOFF_PID")
	HANDOFF_ADDR=$(wait_line "$WORK/handoff-$mode.out" "listening udp " "$HANDOFF_PID")
	HTTP_ADDR=$(wait_line "$WORK/handoff-$mode.out" "listening http " "$HANDOFF_PID")
}

run_uac() { # name rate calls
	local rc=0
	# shellcheck disable=SC2046
	timeout -k 5 "$((STEP_SECS + 40))" sipp "$HANDOFF_ADDR" -sf "$UAC_SCENARIO" \
		-i 127.0.0.1 $(sipp_ports) -t u1 -nostdin -s "$CALLED" \
		-r "$2" -m "$3" -l "$(($2 * 6))" -d 0 \
		-recv_timeout 5000 -timeout "$((STEP_SECS + 30))s" -timeout_error \
		-trace_stat -stf "$WORK/$1.csv" -fd 1 -trace_err -error_file "$WORK/$1_errors.log" \
		>/dev/null 2>"$WORK/$1.err" || rc=$?
	return "$rc"
}

ROWS=""
EVROWS=""
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for mode in $MODES; do
	log "mode $mode: fresh handoff"
	SINK_PID=""
	[[ $mode == on ]] && start_sink
	start_handoff "$mode"
	run_uac "warmup-$mode" 100 200 || true
	sleep 2
	cpu0=$(proc_ticks "$HANDOFF_PID")
	ev0=$(thread_ticks "$HANDOFF_PID" events)
	wr0=$(thread_ticks "$HANDOFF_PID" writer)
	log "mode $mode: $((RATE * STEP_SECS)) calls at $RATE/s"
	rc=0
	run_uac "step-$mode" "$RATE" "$((RATE * STEP_SECS))" || rc=$?
	ended=$(date +%s.%N)
	drain="n/a"
	if [[ $mode == on ]]; then
		emitted=$(metric "$HTTP_ADDR" handoff_events_emitted_total)
		until (($(sink_stat unique) >= emitted)); do
			if (($(echo "$(date +%s.%N) - $ended > $DRAIN_SECS" | bc -l 2>/dev/null || echo 0))); then
				log "mode on: sink has $(sink_stat unique) of $emitted events after ${DRAIN_SECS}s"
				break
			fi
			sleep 0.5
			emitted=$(metric "$HTTP_ADDR" handoff_events_emitted_total)
		done
		drain=$(awk -v a="$ended" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	fi
	# CPU is read SETTLE_SECS after the last call (or after the last event, if later).
	awk -v a="$ended" -v b="$(date +%s.%N)" -v s="$SETTLE_SECS" 'BEGIN { w = s - (b - a); if (w > 0) printf "%.1f", w; else print 0 }' | xargs sleep
	cpu1=$(proc_ticks "$HANDOFF_PID")
	ev1=$(thread_ticks "$HANDOFF_PID" events)
	wr1=$(thread_ticks "$HANDOFF_PID" writer)
	att=$(csv_last "$WORK/step-$mode.csv" 'OutgoingCall(C)')
	ok=$(csv_last "$WORK/step-$mode.csv" 'SuccessfulCall(C)')
	bad=$(csv_last "$WORK/step-$mode.csv" 'FailedCall(C)')
	total=$((cpu1 - cpu0))
	evt=$((ev1 - ev0))
	notes=""
	((rc != 0)) && notes="sipp-exit=$rc"
	wr=$((wr1 - wr0))
	ROWS+="| $mode | $att | $ok | $bad | $(per1k "$total" "$att") | $(per1k "$((total - evt))" "$att") | $(per1k "$wr" "$att") | $(per1k "$((evt - wr))" "$att") | $notes |"$'\n'
	if [[ $mode == on ]]; then
		emitted=$(metric "$HTTP_ADDR" handoff_events_emitted_total)
		dropped=$(metric "$HTTP_ADDR" handoff_events_dropped_total)
		depth=$(metric "$HTTP_ADDR" handoff_events_outbox_depth)
		retried=$(metric "$HTTP_ADDR" 'handoff_events_deliveries_total{outcome="retried"}')
		EVROWS+="| $emitted | $(sink_stat unique) | $(sink_stat duplicates) | $(sink_stat bad_signature) | $dropped | $depth | $retried | ${drain}s | $(secs "$(proc_ticks "$SINK_PID")") |"$'\n'
	fi
	log "mode $mode: attempted=$att ok=$ok failed=$bad cpu=$(secs "$total")s (events threads $(secs "$evt")s)"
	stop_pid "$HANDOFF_PID" 10
	[[ -n $SINK_PID ]] && stop_pid "$SINK_PID" 5
done

{
	echo
	echo "## events, $STAMP"
	echo
	echo "- command: \`bench/events_load.sh\` (RATE=$RATE STEP_SECS=$STEP_SECS MODES=\"$MODES\")"
	echo "- target: $VERSION; media passthrough, [store] on a file (WAL, synchronous = FULL)"
	echo "- host: $(nproc) cores, $(uname -sr); SIPp UAC, SIPp UAS, the sink and handoff share them;"
	echo "  load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	echo "| subscriber | attempted | successful | failed | handoff CPU s / 1000 calls | of which SIP side (all but the event threads) | outbox writer thread | delivery thread | notes |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s' "$ROWS"
	if [[ -n $EVROWS ]]; then
		echo
		echo "| events emitted | delivered (unique ids) | duplicates | bad signatures | dropped | outbox depth after | retried attempts | last call to last event | sink CPU s |"
		echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
		printf '%s' "$EVROWS"
	fi
} | tee -a "$RESULT_FILE"
log "results appended to $RESULT_FILE"
