#!/usr/bin/env bash
# Load benchmark: SIPp basic calls through a target at rising rates, plus a
# memory step holding many concurrent calls. See bench/README.md.
#
#   bench/sipp_load.sh handoff    # cargo build --release, run target/release/handoff
#   bench/sipp_load.sh kamailio   # Debian's kamailio 5.6 as a minimal stateful proxy
#
# Carrier (SIPp UAC, sipp-scenarios/carrier_uac.xml without its spoofed
# X-OPENCX-SESSION-ID line, so handoff does not log a warning per call)
# -> target -> AI agent (SIPp's stock UAS: 180 and 200 back to back). Everything on 127.0.0.1,
# every port a random free one, every process stopped by PID on exit.
#
# Tunables (environment): RATES, STEP_SECS, HOLD_CALLS, HOLD_RATE,
# KAMAILIO_CHILDREN, HANDOFF_BIN (skip the build and run this binary),
# TRUNKS=1 (handoff with three [[trunk]]s, the carrier's last, and the route
# restricted to it: the source ACL and per-trunk accounting on every call).
set -euo pipefail

usage() {
	echo "usage: $0 handoff|kamailio" >&2
	exit 2
}
[[ $# -eq 1 ]] || usage
TARGET=$1
[[ $TARGET == handoff || $TARGET == kamailio ]] || usage

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SCENARIOS=$ROOT/sipp-scenarios

RATES=${RATES:-"250 500 1000 1500 2000 2500 3000"}
STEP_SECS=${STEP_SECS:-10}        # seconds of new calls per step
SETTLE_SECS=${SETTLE_SECS:-6}     # after a step, before reading CPU (Kamailio's wait state is 5 s)
HOLD_CALLS=${HOLD_CALLS:-5000}    # concurrent calls in the memory step
HOLD_RATE=${HOLD_RATE:-250}       # calls/s while they accumulate
KAMAILIO_CHILDREN=${KAMAILIO_CHILDREN:-1}
TRUNKS=${TRUNKS:-0}
CALLED=+18005550100

for tool in sipp python3 ss getconf; do
	command -v "$tool" >/dev/null || {
		case $tool in
		sipp) echo "sipp not found: apt-get install sip-tester (SIPp 3.6)" >&2 ;;
		*) echo "$tool not found" >&2 ;;
		esac
		exit 1
	}
done
if [[ $TARGET == kamailio ]] && ! command -v kamailio >/dev/null; then
	echo "kamailio not found: apt-get install kamailio (5.6)" >&2
	exit 1
fi

CLK_TCK=$(getconf CLK_TCK)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/handoff-bench-$TARGET.XXXXXX")
RESULTS_DIR=$HERE/results
RESULT_FILE=$RESULTS_DIR/$TARGET-$STAMP.md
mkdir -p "$RESULTS_DIR"

log() { echo "[sipp_load $(date +%T)] $*" >&2; }

# --- processes, all stopped by PID; free ports: bench/lib.sh ----------------
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
PIDS=()          # background processes we started (sipp under timeout, UAS, target)
TARGET_PID=""
TARGET_TREE=()   # the target and its children (Kamailio forks workers)

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}" 5
	done
	# Kamailio's workers leave with their parent; any that did not, by PID.
	for pid in "${TARGET_TREE[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	log "work files in $WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- /proc figures for the target's process tree -----------------------------
refresh_tree() {
	TARGET_TREE=("$TARGET_PID")
	local child
	for child in $(ps -o pid= --ppid "$TARGET_PID" 2>/dev/null); do
		TARGET_TREE+=("$child")
	done
}
cpu_ticks() { # utime + stime of every process in the tree (threads included)
	local pid total=0 t
	refresh_tree
	for pid in "${TARGET_TREE[@]}"; do
		t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
		total=$((total + ${t:-0}))
	done
	echo "$total"
}
pss_kb() { # proportional set size summed over the tree: shared memory counted once
	local pid total=0 k
	refresh_tree
	for pid in "${TARGET_TREE[@]}"; do
		k=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null) || k=0
		total=$((total + ${k:-0}))
	done
	echo "$total"
}
rss_kb() { # VmRSS of the target's main process
	awk '/^VmRSS:/ {print $2}' "/proc/$TARGET_PID/status" 2>/dev/null || echo 0
}
target_alive() {
	kill -0 "$TARGET_PID" 2>/dev/null
}

udp_rcvbuf_errors() { # datagrams the kernel dropped for a full socket buffer (this netns)
	awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

udp_socket_drops() { # port -> drops counted on the UDP socket bound to 127.0.0.1:port
	awk -v want="$(printf '0100007F:%04X' "$1")" '$2 == want { d += $NF } END { print d + 0 }' /proc/net/udp
}

# --- SIPp statistics (-trace_stat CSV, ';'-separated, header first) ----------
csv_last() { # file column -> value of column on the last line
	awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		{ last = $c } END { print (c && last != "" ? last : 0) }' "$1" 2>/dev/null || echo 0
}
csv_failures() { # non-zero Failed*(C) columns of the last line, for the notes
	awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) h[i] = $i; next } { for (i in h) v[i] = $i }
		END { for (i in h) if (h[i] ~ /^Failed.+\(C\)$/ && h[i] != "FailedCall(C)" && v[i] + 0 > 0) { n = h[i]; sub(/^Failed/, "", n); sub(/\(C\)$/, "", n); out = out sep n "=" v[i]; sep = " " } print out }' "$1" 2>/dev/null || true
}
csv_send_secs() { # seconds from start until OutgoingCall(C) reached $2
	awk -F';' -v n="$2" 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "OutgoingCall(C)") o = i; if ($i == "CurrentTime") t = i; if ($i == "StartTime") s = i }; next }
		{ split($s, a, "\t"); split($t, b, "\t"); if ($o + 0 >= n + 0) { printf "%.1f", b[3] - a[3]; found = 1; exit } }
		END { if (!found) print "" }' "$1" 2>/dev/null || true
}

# --- the target ----------------------------------------------------------------
UAS_PORT=$(free_port)

# A basic call: the carrier scenario minus the spoofed header (that one is for
# the tests: handoff strips it and warns, once per call).
UAC_SCENARIO=$WORK/carrier_uac_basic.xml
grep -v 'X-OPENCX-SESSION-ID: spoofed' "$SCENARIOS/carrier_uac.xml" >"$UAC_SCENARIO"

start_handoff() {
	local bin=${HANDOFF_BIN:-}
	if [[ -z $bin ]]; then
		log "cargo build --release in $ROOT"
		(cd "$ROOT" && cargo build --release --quiet) >&2
		bin=$ROOT/target/release/handoff
	fi
	TARGET_VERSION="handoff $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown) ($bin)"
	cat >"$WORK/handoff.toml" <<EOF
[sip]
listen_udp = ["127.0.0.1:0"]
listen_tcp = ["127.0.0.1:0"]

[limits]
max_calls = 20000
max_calls_per_second = 5000
drain_timeout_secs = 2

[session]
default_country = "US"
# The shipped default. Ended calls' sessions linger (linger_secs, 300 s) and
# a full table evicts the oldest lingering one: a run places ~112000 calls,
# so the later steps also exercise eviction.
capacity = 50000

[log]
level = "warn"

[http]
listen = "127.0.0.1:0"

# Signalling only: this benchmark measures SIP (and Kamailio, the reference,
# relays no media either). The media relay has its own, bench/rtp_load.sh;
# 5,000 held relayed calls would also need 20,000 sockets.
[media]
mode = "passthrough"

[[route]]
prefix = ""
org_id = "org-bench"
agent_id = "agent-bench"
ai_agent_uri = "sip:ai@127.0.0.1:$UAS_PORT"
EOF
	if [[ $TRUNKS == 1 ]]; then
		cat >>"$WORK/handoff.toml" <<EOF
trunks = ["carrier"]

[[trunk]]
name = "other-a"
sources = ["198.51.100.0/24", "2001:db8::/32"]

[[trunk]]
name = "other-b"
sources = ["203.0.113.0/24"]

[[trunk]]
name = "carrier"
sources = ["10.0.0.0/8", "127.0.0.1/32"]
EOF
		TARGET_VERSION="$TARGET_VERSION, 3 trunks"
	fi
	"$bin" run --config "$WORK/handoff.toml" >"$WORK/handoff.out" 2>"$WORK/handoff.err" &
	TARGET_PID=$!
	PIDS+=("$TARGET_PID")
	TARGET_ADDR=$(wait_line "$WORK/handoff.out" "listening udp " "$TARGET_PID" "$WORK/handoff.err")
}

start_kamailio() {
	local port cfg i
	port=$(free_port)
	cfg=$WORK/kamailio.cfg
	sed -e "s/@LISTEN_PORT@/$port/g" -e "s/@UAS_PORT@/$UAS_PORT/g" \
		-e "s/^children=.*/children=$KAMAILIO_CHILDREN/" "$HERE/kamailio.cfg.in" >"$cfg"
	kamailio -c -f "$cfg" >"$WORK/kamailio-check.log" 2>&1 || {
		cat "$WORK/kamailio-check.log" >&2
		exit 1
	}
	TARGET_VERSION="$(kamailio -v | head -1 | sed 's/^version: //; s/ *$//'), children=$KAMAILIO_CHILDREN, -m 1024 -M 16"
	# -DD: stay in the foreground (workers are still forked); -E: log to stderr.
	kamailio -f "$cfg" -DD -E -m 1024 -M 16 >"$WORK/kamailio.out" 2>"$WORK/kamailio.err" &
	TARGET_PID=$!
	PIDS+=("$TARGET_PID")
	for ((i = 0; i < 150; i++)); do
		[[ -n $(ss -Hlun "sport = :$port") ]] && break
		kill -0 "$TARGET_PID" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z $(ss -Hlun "sport = :$port") ]]; then
		log "kamailio is not listening on udp 127.0.0.1:$port; stderr:"
		tail -20 "$WORK/kamailio.err" >&2
		exit 1
	fi
	sleep 0.5 # workers
	refresh_tree
	TARGET_ADDR=127.0.0.1:$port
}

# --- SIPp --------------------------------------------------------------------------
start_uas() {
	# Stock UAS: INVITE, 180 and 200 back to back, ACK, BYE, 200.
	sipp -sn uas -i 127.0.0.1 -p "$UAS_PORT" -cp "$(free_port)" -mp "$(free_media_port)" -t u1 -nostdin \
		-trace_stat -stf "$WORK/uas.csv" -fd 1 -trace_err -error_file "$WORK/uas_errors.log" \
		>/dev/null 2>"$WORK/uas.err" &
	UAS_PID=$!
	PIDS+=("$UAS_PID")
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -n $(ss -Hlun "sport = :$UAS_PORT") ]] && return 0
		sleep 0.1
	done
	log "SIPp UAS did not bind udp 127.0.0.1:$UAS_PORT"
	cat "$WORK/uas.err" >&2
	exit 1
}

run_uac() { # name rate calls limit pause_ms hard_timeout_s  -> waits for it
	local name=$1 rate=$2 calls=$3 limit=$4 pause=$5 hard=$6 rc=0 pid
	# shellcheck disable=SC2046
	timeout -k 5 "$((hard + 10))" sipp "$TARGET_ADDR" -sf "$UAC_SCENARIO" \
		-i 127.0.0.1 $(sipp_ports) -t u1 -nostdin -s "$CALLED" \
		-r "$rate" -m "$calls" -l "$limit" -d "$pause" \
		-recv_timeout 5000 -timeout "${hard}s" -timeout_error \
		-trace_stat -stf "$WORK/$name.csv" -fd 1 \
		-trace_err -error_file "$WORK/${name}_errors.log" \
		>/dev/null 2>"$WORK/$name.err" &
	pid=$!
	PIDS+=("$pid")
	UAC_PID=$pid
	if [[ ${7:-} == background ]]; then return 0; fi
	wait "$pid" || rc=$?
	return "$rc"
}

# --- memory step (on the fresh target, before the load steps) -------------------
memory_step() {
	local ramp hold_ms hard i current=0 base_pss base_rss pss rss after_pss after_rss rc=0
	log "memory step: warm-up, 200 calls at 100/s"
	run_uac warmup 100 200 1000 0 30 || true
	sleep "$SETTLE_SECS"
	base_pss=$(pss_kb)
	base_rss=$(rss_kb)
	ramp=$(((HOLD_CALLS + HOLD_RATE - 1) / HOLD_RATE))
	hold_ms=$(((ramp + 15) * 1000))
	hard=$((ramp + hold_ms / 1000 + 30))
	log "memory step: $HOLD_CALLS calls at $HOLD_RATE/s, each held ${hold_ms} ms"
	run_uac hold "$HOLD_RATE" "$HOLD_CALLS" "$HOLD_CALLS" "$hold_ms" "$hard" background
	for ((i = 0; i < (ramp + 10) * 2; i++)); do
		sleep 0.5
		current=$(csv_last "$WORK/hold.csv" CurrentCall)
		((current >= HOLD_CALLS)) && break
		kill -0 "$UAC_PID" 2>/dev/null || break
	done
	sleep 2
	current=$(csv_last "$WORK/hold.csv" CurrentCall)
	pss=$(pss_kb)
	rss=$(rss_kb)
	if ! target_alive; then
		MEM_REPORT="The target exited during the memory step (see $WORK)."
		log "$MEM_REPORT"
		return 0
	fi
	log "memory step: holding $current calls; waiting for them to end"
	wait "$UAC_PID" || rc=$?
	sleep "$SETTLE_SECS"
	after_pss=$(pss_kb)
	after_rss=$(rss_kb)
	MEM_REPORT=$(
		awk -v n="$current" -v bp="$base_pss" -v p="$pss" -v ap="$after_pss" \
			-v br="$base_rss" -v r="$rss" -v ar="$after_rss" -v want="$HOLD_CALLS" \
			-v ok="$(csv_last "$WORK/hold.csv" 'SuccessfulCall(C)')" \
			-v bad="$(csv_last "$WORK/hold.csv" 'FailedCall(C)')" 'BEGIN {
			printf "| figure | before | holding %d calls | after they ended |\n", n
			printf "| --- | --- | --- | --- |\n"
			printf "| Pss, all target processes (kB) | %d | %d | %d |\n", bp, p, ap
			printf "| VmRSS, main process (kB) | %d | %d | %d |\n", br, r, ar
			if (n > 0) {
				printf "\nBytes per concurrent call (Pss growth / calls held): **%.0f**", (p - bp) * 1024 / n
				printf "; by VmRSS of the main process: %.0f.\n", (r - br) * 1024 / n
			}
			if (n < want) printf "\nOnly %d of %d calls were up at once.\n", n, want
			printf "Held calls: %d successful, %d failed.\n", ok, bad
		}'
	)
}

# --- load steps ------------------------------------------------------------------------------
load_steps() {
	local rate calls cpu0 cpu1 att ok bad sent_secs sent_rate cpu_s per1k notes rc drops0 drops tdrops0 udrops0
	ROWS=""
	BEST=""
	CPU_AT_1000=""
	for rate in $RATES; do
		calls=$((rate * STEP_SECS))
		log "step: $rate calls/s, $calls calls"
		cpu0=$(cpu_ticks)
		drops0=$(udp_rcvbuf_errors)
		tdrops0=$(udp_socket_drops "${TARGET_ADDR##*:}")
		udrops0=$(udp_socket_drops "$UAS_PORT")
		rc=0
		run_uac "step-$rate" "$rate" "$calls" "$((rate * 6))" 0 "$((STEP_SECS + 25))" || rc=$?
		sleep "$SETTLE_SECS"
		cpu1=$(cpu_ticks)
		att=$(csv_last "$WORK/step-$rate.csv" 'OutgoingCall(C)')
		ok=$(csv_last "$WORK/step-$rate.csv" 'SuccessfulCall(C)')
		bad=$(csv_last "$WORK/step-$rate.csv" 'FailedCall(C)')
		sent_secs=$(csv_send_secs "$WORK/step-$rate.csv" "$att")
		sent_rate=$(awk -v a="$att" -v s="$sent_secs" 'BEGIN { if (s > 0) printf "%.0f", a / s; else print "n/a" }')
		cpu_s=$(awk -v t="$((cpu1 - cpu0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
		per1k=$(awk -v c="$cpu_s" -v a="$att" 'BEGIN { if (a > 0) printf "%.3f", c / (a / 1000); else print "n/a" }')
		notes=$(csv_failures "$WORK/step-$rate.csv")
		((att - ok - bad > 0)) && notes="$notes unfinished=$((att - ok - bad))"
		((rc != 0)) && notes="$notes sipp-exit=$rc"
		drops=$(($(udp_rcvbuf_errors) - drops0))
		if ((drops > 0)); then
			notes="$notes udp-rcvbuf-drops=$drops (target socket $(($(udp_socket_drops "${TARGET_ADDR##*:}") - tdrops0)), UAS socket $(($(udp_socket_drops "$UAS_PORT") - udrops0)))"
		fi
		if ! target_alive; then
			notes="$notes TARGET-EXITED"
		fi
		ROWS+="| $rate | $att | $ok | $bad | $sent_rate | $cpu_s | $per1k | ${notes# } |"$'\n'
		log "  attempted=$att ok=$ok failed=$bad sent/s=$sent_rate cpu=${cpu_s}s per1000=$per1k $notes"
		if ((bad == 0 && att == calls && ok == calls)); then
			BEST=$rate
		fi
		((rate == 1000)) && CPU_AT_1000=$per1k
		if ! target_alive; then
			log "target exited; stopping"
			break
		fi
		if ((att == 0 || bad * 5 > att)); then
			log "more than 20% of calls failed: the target has collapsed; stopping the ramp"
			break
		fi
	done
}

# --- run -------------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "target $TARGET, work dir $WORK"
start_uas
"start_$TARGET"
log "target $TARGET_VERSION at $TARGET_ADDR (pid $TARGET_PID), UAS at 127.0.0.1:$UAS_PORT"
MEM_REPORT=""
memory_step
if target_alive; then
	load_steps
else
	ROWS=""
	log "the target exited; no load steps"
fi

{
	echo
	echo "## $TARGET, $STAMP"
	echo
	echo "- command: \`bench/sipp_load.sh $TARGET\` (RATES=\"$RATES\" STEP_SECS=$STEP_SECS HOLD_CALLS=$HOLD_CALLS HOLD_RATE=$HOLD_RATE)"
	echo "- target: $TARGET_VERSION"
	echo "- SIPp: $(sipp -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*' | sed 's/\.$//'), carrier_uac.xml (no spoofed header) -> target -> stock UAS (-sn uas), UDP (-t u1)"
	echo "- host: $(nproc) cores, $(uname -sr); SIPp UAC, SIPp UAS and the target share them;"
	echo "  load average before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	echo "| offered calls/s | attempted | successful | failed | sent calls/s | target CPU s | CPU s / 1000 calls | notes |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s' "$ROWS"
	echo
	echo "Highest offered rate with zero failed calls: **${BEST:-none}** calls/s."
	echo "Target CPU seconds per 1,000 calls at 1,000 calls/s: **${CPU_AT_1000:-n/a}**."
	echo
	echo "### Memory: $HOLD_CALLS concurrent calls"
	echo
	echo "$MEM_REPORT"
} | tee -a "$RESULT_FILE"
log "results appended to $RESULT_FILE"
