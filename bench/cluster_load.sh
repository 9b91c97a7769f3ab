#!/usr/bin/env bash
# Calls per second through Kamailio + 2 handoff nodes against 1 node (issue 13).
#
# Three configurations, all up for the whole run, offered the same SIPp basic
# call at the same rates, one after the other at each rate (A, B, C at the
# first rate, then A, B, C at the next, ...) so that a change in the machine's
# load hits all three alike:
#
#   A  SIPp UAC -> handoff (in-memory sessions)                        -> SIPp UAS
#   B  SIPp UAC -> Kamailio (shipped cfg) -> 1 handoff node (Redis)    -> SIPp UAS
#   C  SIPp UAC -> Kamailio (shipped cfg) -> 2 handoff nodes (Redis)   -> SIPp UAS
#
# Per step: the UAC's attempted / successful / failed calls, and the CPU
# seconds (utime + stime from /proc, all threads) of each part over the step
# and its settle time: handoff (nodes summed), Kamailio (main process and its
# workers), redis-server, SIPp (UAC + UAS), and the rest of the machine (busy
# time from /proc/stat minus all of those: other people's builds).
#
# Usage: bench/cluster_load.sh   (runs cargo build --release; HANDOFF_BIN skips it)
# Knobs (environment): RATES ("500 1000 1500 2000 2500 3000"), STEP_SECS (10),
# SETTLE_SECS (6), CALL_MS (1000: how long each call is held before the
# caller's BYE), CPU_RATE (1000: the rate of the summary's CPU per call),
# CONFIGS ("A B C"), KAMAILIO_CHILDREN (empty: the shipped children=4; n: -n n),
# KAMAILIO_SHM_MB (1024), HANDOFF_BIN (skip the build, run this binary),
# WARMUP_CALLS (200, at 100/s, per configuration before the first step),
# STRICT_UAC (0: the UAC carries on past an unexpected message, counted in the
# notes; 1: SIPp's default, which fails the call on one).
#
# Why STRICT_UAC=0 by default: the shipped Kamailio runs 4 UDP workers, and
# when a node sends 180 and 200 back to back two workers can relay the 200
# first. An RFC 3261 UA drops a 180 that comes after the 200 (the INVITE
# transaction is over); SIPp's default fails the call on it, which would make
# the top rate a count of reorderings instead of a capacity. A real failure
# (an error response, a lost message) still fails the call: the UAC then waits
# for the 200 it needs and gives up after -recv_timeout (TimeoutOnRecv).
#
# The defaults take about 6 minutes (less when a configuration drops out); a
# run stays under 10 unless the knobs ask for more (the script says so up
# front). The report: stdout and bench/results/cluster_load-<UTC>.md; the
# work files: /tmp/handoff-cluster-bench.*; bench/README.md has the details.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SCENARIOS=$ROOT/sipp-scenarios
KAM_CFG=$ROOT/deploy/kamailio/kamailio.cfg

RATES=${RATES:-"500 1000 1500 2000 2500 3000"}
STEP_SECS=${STEP_SECS:-10}
SETTLE_SECS=${SETTLE_SECS:-6}
CALL_MS=${CALL_MS:-1000}
CPU_RATE=${CPU_RATE:-1000}
CONFIGS=${CONFIGS:-"A B C"}
KAMAILIO_CHILDREN=${KAMAILIO_CHILDREN:-}
KAMAILIO_SHM_MB=${KAMAILIO_SHM_MB:-1024}
WARMUP_CALLS=${WARMUP_CALLS:-200}
STRICT_UAC=${STRICT_UAC:-0}
CALLED=+18005550100

export PATH=$PATH:/usr/sbin:/sbin
for tool in sipp kamailio redis-server python3 ss getconf curl; do
	command -v "$tool" >/dev/null || {
		case $tool in
		sipp) echo "sipp not found: apt-get install sip-tester (SIPp 3.6)" >&2 ;;
		kamailio) echo "kamailio not found: apt-get install kamailio (5.6)" >&2 ;;
		redis-server) echo "redis-server not found: apt-get install redis-server" >&2 ;;
		*) echo "$tool not found" >&2 ;;
		esac
		exit 1
	}
done
for cfg in $CONFIGS; do
	[[ $cfg == A || $cfg == B || $cfg == C ]] || {
		echo "CONFIGS: A, B and/or C, not '$cfg'" >&2
		exit 2
	}
done

CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/handoff-cluster-bench.XXXXXX")
RESULTS_DIR=$HERE/results
RESULT_FILE=$RESULTS_DIR/cluster_load-$STAMP.md
mkdir -p "$RESULTS_DIR"

log() { echo "[cluster_load $(date +%T)] $*" >&2; }

# --- processes, all stopped by PID ------------------------------------------------
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
PIDS=()     # every background process we started, stopped in reverse order
KAM_ALL=()  # Kamailio workers, killed by PID if one outlives its parent

cleanup() {
	local rc=$? i pid
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}" 5
	done
	for pid in "${KAM_ALL[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	log "work files in $WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- /proc figures, read without forking ------------------------------------------
TICKS=0
ticks_of() { # pid... -> TICKS = sum of utime + stime (all threads); a gone pid counts 0
	local pid line rest f
	TICKS=0
	for pid in "$@"; do
		line=""
		{ read -r line <"/proc/$pid/stat"; } 2>/dev/null || continue
		rest=${line##*) }
		read -ra f <<<"$rest"
		TICKS=$((TICKS + f[11] + f[12]))
	done
}
ticks_in() { # "pid pid ..." -> TICKS, as ticks_of
	local pids=()
	read -ra pids <<<"$1"
	ticks_of "${pids[@]}"
}
MBUSY=0
MTOTAL=0
machine_ticks() { # MBUSY, MTOTAL: the whole machine's busy and total ticks (/proc/stat)
	local _cpu u n s idle io irq sirq st _rest
	read -r _cpu u n s idle io irq sirq st _rest </proc/stat
	MBUSY=$((u + n + s + irq + sirq + st))
	MTOTAL=$((MBUSY + idle + io))
}
udp_rcvbuf_errors() { # datagrams the kernel dropped for a full socket buffer (this netns)
	awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# --- SIPp statistics (-trace_stat CSV, ';'-separated, header first) ---------------
csv_last() { # file column -> value of column on the last line
	awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		{ last = $c } END { print (c && last != "" ? last : 0) }' "$1" 2>/dev/null || echo 0
}
csv_failures() { # non-zero Failed*(C) columns of the last line, for the notes
	awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) h[i] = $i; next } { for (i in h) v[i] = $i }
		END { for (i in h) if (h[i] ~ /^Failed.+\(C\)$/ && h[i] != "FailedCall(C)" && v[i] + 0 > 0) { n = h[i]; sub(/^Failed/, "", n); sub(/\(C\)$/, "", n); out = out sep n "=" v[i]; sep = " " } print out }' "$1" 2>/dev/null || true
}
unexpected_seen() { # SIPp error log -> "carried on past: 180=N 503=M ..." (messages the UAC did not expect)
	grep -a "Continuing call on unexpected message" "$1" 2>/dev/null |
		sed -n "s/.*, received '\(SIP\/2\.0 \)\{0,1\}\([^ ]*\).*/\2/p" | sort | uniq -c |
		awk '{ out = out sep $2 "=" $1; sep = " " } END { if (out != "") print "carried on past: " out }' || true
}
csv_send_secs() { # seconds from start until OutgoingCall(C) reached $2
	awk -F';' -v n="$2" 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "OutgoingCall(C)") o = i; if ($i == "CurrentTime") t = i; if ($i == "StartTime") s = i }; next }
		{ split($s, a, "\t"); split($t, b, "\t"); if ($o + 0 >= n + 0) { printf "%.1f", b[3] - a[3]; found = 1; exit } }
		END { if (!found) print "" }' "$1" 2>/dev/null || true
}

# --- the parts -------------------------------------------------------------------------
UAS_PORT=$(free_port)
UAC_SCENARIO=$WORK/carrier_uac_basic.xml
# The carrier scenario minus its spoofed header (for the tests: handoff strips
# it and logs a warning per call, which would be measured too).
grep -v 'X-OPENCX-SESSION-ID: spoofed' "$SCENARIOS/carrier_uac.xml" >"$UAC_SCENARIO"

declare -A ENTRY        # cfg -> address the UAC calls
declare -A NODE_PIDS    # cfg -> handoff pids (space-separated)
declare -A NODE_HTTP    # cfg -> handoff http addresses
declare -A KAM_PIDS     # cfg -> Kamailio main pid and its workers
declare -A REDIS_PID    # cfg -> redis-server pid
declare -A REDIS_PORT   # cfg -> its port
declare -A DOWN         # cfg -> 1 once it collapsed or a process died
declare -A PARTS        # cfg -> description for the report

HANDOFF_VERSION=""
build_handoff() {
	BIN=${HANDOFF_BIN:-}
	if [[ -z $BIN ]]; then
		log "cargo build --release in $ROOT"
		(cd "$ROOT" && cargo build --release --quiet) >&2
		BIN=$ROOT/target/release/handoff
	fi
	HANDOFF_VERSION="handoff $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
}

start_redis() { # cfg
	local cfg=$1 port dir pid i
	port=$(free_port)
	dir=$WORK/redis-$cfg
	mkdir -p "$dir"
	# No persistence (sessions are short-lived; see README "Shared sessions").
	redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
		--daemonize no --dir "$dir" --logfile "$dir/redis.log" >/dev/null 2>&1 &
	pid=$!
	PIDS+=("$pid")
	REDIS_PID[$cfg]=$pid
	REDIS_PORT[$cfg]=$port
	for ((i = 0; i < 100; i++)); do
		[[ -n $(ss -Hltn "sport = :$port") ]] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z $(ss -Hltn "sport = :$port") ]]; then
		log "redis-server ($cfg) is not listening on 127.0.0.1:$port"
		tail -20 "$dir/redis.log" >&2 || true
		exit 1
	fi
	REDIS_URL="redis://127.0.0.1:$port/0"
}

start_node() { # cfg node_id session-toml -> sets NODE_ADDR
	local cfg=$1 id=$2 session=$3 conf pid
	conf=$WORK/$id.toml
	cat >"$conf" <<EOF
[sip]
listen_udp = ["127.0.0.1:0"]
listen_tcp = ["127.0.0.1:0"]

[limits]
max_calls = 20000
max_calls_per_second = 5000
drain_timeout_secs = 2

[session]
default_country = "US"
capacity = 50000
$session

[cluster]
node_id = "$id"

[log]
level = "warn"

[http]
listen = "127.0.0.1:0"

# Signalling only, as in bench/sipp_load.sh (Kamailio relays no media either).
[media]
mode = "passthrough"

[[route]]
prefix = ""
org_id = "org-bench"
agent_id = "agent-bench"
ai_agent_uri = "sip:ai@127.0.0.1:$UAS_PORT"
EOF
	"$BIN" run --config "$conf" >"$WORK/$id.out" 2>"$WORK/$id.err" &
	pid=$!
	PIDS+=("$pid")
	NODE_PIDS[$cfg]="${NODE_PIDS[$cfg]:-} $pid"
	NODE_ADDR=$(wait_line "$WORK/$id.out" "listening udp " "$pid" "$WORK/$id.err")
	NODE_HTTP[$cfg]="${NODE_HTTP[$cfg]:-} $(wait_line "$WORK/$id.out" "listening http " "$pid" "$WORK/$id.err")"
}

start_kamailio() { # cfg node-addr... : the shipped deploy/kamailio/kamailio.cfg
	local cfg=$1 port dir list node pid i child
	shift
	port=$(free_port)
	dir=$WORK/kamailio-$cfg
	mkdir -p "$dir"
	list=$dir/dispatcher.list
	: >"$list"
	for node in "$@"; do
		echo "1 sip:$node 0 0" >>"$list"
	done
	KAM_ARGS=(-f "$KAM_CFG" -Y "$dir"
		-A "SIP_LISTEN=udp:127.0.0.1:$port" -A "SIP_LISTEN_TCP=tcp:127.0.0.1:$port"
		-A "DS_LIST=\"$list\"")
	if [[ -n $KAMAILIO_CHILDREN ]]; then
		KAM_ARGS+=(-n "$KAMAILIO_CHILDREN")
	fi
	kamailio -c "${KAM_ARGS[@]}" >"$dir/check.log" 2>&1 || {
		cat "$dir/check.log" >&2
		exit 1
	}
	# -DD: foreground (workers still forked); -E: log to stderr. Shared memory
	# sized for transactions in wait state, as in bench/sipp_load.sh.
	kamailio "${KAM_ARGS[@]}" -DD -E -m "$KAMAILIO_SHM_MB" -M 16 >"$dir/kamailio.out" 2>"$dir/kamailio.err" &
	pid=$!
	PIDS+=("$pid")
	for ((i = 0; i < 150; i++)); do
		[[ -n $(ss -Hlun "sport = :$port") ]] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z $(ss -Hlun "sport = :$port") ]]; then
		log "kamailio ($cfg) is not listening on udp 127.0.0.1:$port; stderr:"
		tail -20 "$dir/kamailio.err" >&2
		exit 1
	fi
	sleep 1 # workers
	KAM_PIDS[$cfg]=$pid
	for child in $(ps -o pid= --ppid "$pid"); do
		KAM_PIDS[$cfg]+=" $child"
		KAM_ALL+=("$child")
	done
	ENTRY[$cfg]=127.0.0.1:$port
}

start_uas() {
	# SIPp's stock UAS (the AI agent): 180 and 200 back to back, ACK, BYE, 200.
	# One for all configurations; only one configuration has calls at a time.
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

UAC_TICKS=0
run_uac() { # cfg name rate calls -> waits; UAC_TICKS = the UAC's CPU ticks (last sample)
	local cfg=$1 name=$2 rate=$3 calls=$4 hard pid deadline
	hard=$((calls / rate + CALL_MS / 1000 + 25))
	local behaviors=all
	((STRICT_UAC)) || behaviors=all,-abortunexp
	# shellcheck disable=SC2046
	sipp "${ENTRY[$cfg]}" -sf "$UAC_SCENARIO" \
		-i 127.0.0.1 $(sipp_ports) -t u1 -nostdin -s "$CALLED" \
		-r "$rate" -m "$calls" -l "$((rate * 6 + rate * CALL_MS / 1000))" -d "$CALL_MS" \
		-recv_timeout 5000 -timeout "${hard}s" -timeout_error -default_behaviors "$behaviors" \
		-trace_stat -stf "$WORK/$name.csv" -fd 1 \
		-trace_err -error_file "$WORK/${name}_errors.log" \
		>/dev/null 2>"$WORK/$name.err" &
	pid=$!
	PIDS+=("$pid")
	# Sampled every 0.2 s while it runs: SIPp is not our direct child's child,
	# so its CPU is read from /proc before it exits (the last 0.2 s are lost).
	UAC_TICKS=0
	deadline=$((SECONDS + hard + 10))
	while kill -0 "$pid" 2>/dev/null; do
		ticks_of "$pid"
		((TICKS > UAC_TICKS)) && UAC_TICKS=$TICKS
		if ((SECONDS > deadline)); then
			log "SIPp UAC $name outlived its own -timeout; stopping it"
			stop_pid "$pid" 2
			break
		fi
		sleep 0.2
	done
	UAC_RC=0
	wait "$pid" 2>/dev/null || UAC_RC=$?
}

alive() { # cfg -> every process of the configuration still runs
	local pid
	for pid in ${NODE_PIDS[$1]} ${KAM_PIDS[$1]:-} ${REDIS_PID[$1]:-}; do
		kill -0 "$pid" 2>/dev/null || return 1
	done
}

# --- one step ------------------------------------------------------------------------
ROWS=""
declare -A BEST PER1K_H PER1K_K PER1K_R PER1K_SUM PER1K_SIPP
step() { # cfg rate
	local cfg=$1 rate=$2 calls name h0 k0 r0 u0 mb0 mt0 h1 k1 r1 u1 mb1 mt1 drops0 drops
	local att ok bad sent_secs sent_rate notes
	calls=$((rate * STEP_SECS))
	name=step-$cfg-$rate
	log "$cfg: $rate calls/s, $calls calls"
	ticks_in "${NODE_PIDS[$cfg]}"; h0=$TICKS
	ticks_in "${KAM_PIDS[$cfg]:-}"; k0=$TICKS
	ticks_in "${REDIS_PID[$cfg]:-}"; r0=$TICKS
	ticks_of "$UAS_PID"; u0=$TICKS
	drops0=$(udp_rcvbuf_errors)
	machine_ticks; mb0=$MBUSY; mt0=$MTOTAL
	run_uac "$cfg" "$name" "$rate" "$calls"
	sleep "$SETTLE_SECS"
	ticks_in "${NODE_PIDS[$cfg]}"; h1=$TICKS
	ticks_in "${KAM_PIDS[$cfg]:-}"; k1=$TICKS
	ticks_in "${REDIS_PID[$cfg]:-}"; r1=$TICKS
	ticks_of "$UAS_PID"; u1=$TICKS
	machine_ticks; mb1=$MBUSY; mt1=$MTOTAL
	drops=$(($(udp_rcvbuf_errors) - drops0))

	att=$(csv_last "$WORK/$name.csv" 'OutgoingCall(C)')
	ok=$(csv_last "$WORK/$name.csv" 'SuccessfulCall(C)')
	bad=$(csv_last "$WORK/$name.csv" 'FailedCall(C)')
	sent_secs=$(csv_send_secs "$WORK/$name.csv" "$att")
	sent_rate=$(awk -v a="$att" -v s="$sent_secs" 'BEGIN { if (s > 0) printf "%.0f", a / s; else print "n/a" }')
	notes=$(csv_failures "$WORK/$name.csv")
	local seen
	seen=$(unexpected_seen "$WORK/${name}_errors.log")
	[[ -z $seen ]] || notes="$notes $seen"
	((att - ok - bad > 0)) && notes="$notes unfinished=$((att - ok - bad))"
	((UAC_RC != 0)) && notes="$notes sipp-exit=$UAC_RC"
	((drops > 0)) && notes="$notes udp-rcvbuf-drops=$drops"
	if ! alive "$cfg"; then
		notes="$notes A-PROCESS-EXITED"
		DOWN[$cfg]=1
	fi

	# One awk for the arithmetic: CPU seconds and per 1,000 calls.
	local line
	line=$(awk -v hz="$CLK_TCK" -v a="$att" -v h=$((h1 - h0)) -v k=$((k1 - k0)) -v r=$((r1 - r0)) \
		-v s=$((u1 - u0 + UAC_TICKS)) -v mb=$((mb1 - mb0)) -v mt=$((mt1 - mt0)) -v ncpu="$NCPU" 'BEGIN {
		h /= hz; k /= hz; r /= hz; s /= hz; mb /= hz; mt /= hz
		sum = h + k + r
		other = mb - sum - s; if (other < 0) other = 0
		per = (a > 0) ? 1000 / a : 0
		# machine-wide busy share over the step (mt counts every core)
		busy = (mt > 0) ? 100 * mb / mt : 0
		printf "%.2f %.2f %.2f %.2f %.3f %.3f %.3f %.3f %.3f %.0f %.2f\n", h, k, r, s, h * per, k * per, r * per, sum * per, s * per, busy, other
	}')
	local hs ks rs ss hp kp rp sp sipp_p busy other load1
	read -r hs ks rs ss hp kp rp sp sipp_p busy other <<<"$line"
	load1=$(cut -d' ' -f1 /proc/loadavg)
	if [[ -z ${KAM_PIDS[$cfg]:-} ]]; then ks="-" kp="-"; fi
	if [[ -z ${REDIS_PID[$cfg]:-} ]]; then rs="-" rp="-"; fi
	ROWS+="| $rate | $cfg | $att | $ok | $bad | $sent_rate | $hs | $ks | $rs | $hp | $kp | $rp | **$sp** | $ss ($sipp_p) | $busy % | $other | $load1 | ${notes# } |"$'\n'
	log "  $cfg attempted=$att ok=$ok failed=$bad sent/s=$sent_rate cpu/1k: handoff=$hp kamailio=$kp redis=$rp sum=$sp sipp=$sipp_p machine=$busy% other=${other}s load=$load1 $notes"
	if ((bad == 0 && att == calls && ok == calls)); then
		BEST[$cfg]=$rate
	fi
	if ((rate == CPU_RATE)); then
		PER1K_H[$cfg]=$hp; PER1K_K[$cfg]=$kp; PER1K_R[$cfg]=$rp; PER1K_SUM[$cfg]=$sp; PER1K_SIPP[$cfg]=$sipp_p
	fi
	if ((att == 0 || bad * 5 > att)); then
		log "$cfg: more than 20% of calls failed: no higher rate for it"
		DOWN[$cfg]=1
	fi
}

calls_started() { # http-addr -> handoff_calls_started_total
	curl -fsS --max-time 2 "http://$1/metrics" 2>/dev/null |
		awk '$1 == "handoff_calls_started_total" { print $2; f = 1 } END { if (!f) print "?" }'
}

# --- run -------------------------------------------------------------------------------
budget=0
for rate in $RATES; do
	budget=$((budget + (STEP_SECS + CALL_MS / 1000 + SETTLE_SECS + 1) * $(wc -w <<<"$CONFIGS")))
done
budget=$((budget + 40))
log "work dir $WORK; about $((budget / 60)) min $((budget % 60)) s expected"
((budget > 600)) && log "note: these knobs make the run longer than 10 minutes"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
build_handoff
start_uas
for cfg in $CONFIGS; do
	case $cfg in
	A)
		start_node A bench-a 'store = "memory"'
		ENTRY[A]=$NODE_ADDR
		PARTS[A]="SIPp -> handoff (in-memory sessions) -> SIPp UAS"
		;;
	B)
		start_redis B
		start_node B bench-b1 "store = \"redis\"
redis_url = \"$REDIS_URL\""
		start_kamailio B "$NODE_ADDR"
		PARTS[B]="SIPp -> Kamailio -> 1 handoff node (Redis sessions) -> SIPp UAS"
		;;
	C)
		start_redis C
		start_node C bench-c1 "store = \"redis\"
redis_url = \"$REDIS_URL\""
		first=$NODE_ADDR
		start_node C bench-c2 "store = \"redis\"
redis_url = \"$REDIS_URL\""
		start_kamailio C "$first" "$NODE_ADDR"
		PARTS[C]="SIPp -> Kamailio -> 2 handoff nodes (Redis sessions, node_id bench-c1, bench-c2) -> SIPp UAS"
		;;
	esac
	log "$cfg up: ${PARTS[$cfg]}, entry ${ENTRY[$cfg]}"
done

for cfg in $CONFIGS; do
	log "$cfg: warm-up, $WARMUP_CALLS calls at 100/s"
	run_uac "$cfg" "warmup-$cfg" 100 "$WARMUP_CALLS"
	warm_bad=$(csv_last "$WORK/warmup-$cfg.csv" 'FailedCall(C)')
	if ((warm_bad > 0)); then
		log "$cfg: $warm_bad warm-up calls failed (see $WORK/warmup-${cfg}_errors.log)"
	fi
done
sleep "$SETTLE_SECS"

for rate in $RATES; do
	for cfg in $CONFIGS; do
		[[ -n ${DOWN[$cfg]:-} ]] && continue
		step "$cfg" "$rate"
	done
done

# Calls each node took (C shows the spread over its two nodes).
declare -A SPREAD
for cfg in $CONFIGS; do
	SPREAD[$cfg]=""
	for addr in ${NODE_HTTP[$cfg]}; do
		SPREAD[$cfg]+="${SPREAD[$cfg]:+ / }$(calls_started "$addr")"
	done
done
# Redis commands per call: the server's own count (INFO commandstats) over the
# calls the configuration's nodes started (the INFO calls themselves left out).
declare -A REDIS_PER_CALL
for cfg in $CONFIGS; do
	[[ -n ${REDIS_PORT[$cfg]:-} ]] || continue
	started=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i } END { print s + 0 }' <<<"${SPREAD[$cfg]//\// }")
	REDIS_PER_CALL[$cfg]=$(redis-cli -h 127.0.0.1 -p "${REDIS_PORT[$cfg]}" info commandstats 2>/dev/null | tr -d '\r' | grep '^cmdstat_' | sort -t= -k2,2 -rn |
		awk -F'[:,=]' -v n="$started" '$1 != "cmdstat_info" { t += $3; c = substr($1, 9); gsub(/\|/, "/", c); if ($3 / n >= 0.005) { l = l sep c " " sprintf("%.2f", $3 / n); sep = ", " } }
			END { if (n > 0 && t > 0) printf "%.1f (%s)", t / n, l; else print "n/a" }')
done
KAM_VERSION=$(kamailio -v 2>/dev/null | head -1 | sed 's/^version: //; s/ *$//')
REDIS_VERSION=$(redis-server --version | grep -o 'v=[^ ]*' | sed 's/v=//')

{
	echo
	echo "## cluster_load, $STAMP"
	echo
	echo "- command: \`bench/cluster_load.sh\` (RATES=\"$RATES\" STEP_SECS=$STEP_SECS SETTLE_SECS=$SETTLE_SECS CALL_MS=$CALL_MS CONFIGS=\"$CONFIGS\"${KAMAILIO_CHILDREN:+ KAMAILIO_CHILDREN=$KAMAILIO_CHILDREN})"
	echo "- $HANDOFF_VERSION ($BIN), release; $KAM_VERSION with deploy/kamailio/kamailio.cfg (children=${KAMAILIO_CHILDREN:-4 as shipped}, -m $KAMAILIO_SHM_MB -M 16); redis-server $REDIS_VERSION (no persistence)"
	if ((STRICT_UAC)); then
		echo "- UAC: SIPp's default behaviours (an unexpected message fails the call)"
	else
		echo "- UAC: \`-default_behaviors all,-abortunexp\`: a message out of place (a 180 relayed after the 200) is counted in the notes and the call goes on; a real failure still fails it (TimeoutOnRecv)"
	fi
	echo "- SIPp $(sipp -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*' | sed 's/\.$//'): carrier_uac.xml (no spoofed header), each call held ${CALL_MS} ms, then the caller's BYE; stock UAS (-sn uas) as the AI agent; no transfer; UDP on 127.0.0.1"
	echo "- host: $NCPU cores, $(uname -sr); everything shares them (SIPp, Kamailio, Redis, the nodes, and whatever else runs);"
	echo "  load average before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	echo "| configuration | parts | highest offered rate, zero failed | CPU s / 1000 calls at $CPU_RATE/s: handoff (nodes summed) | Kamailio | Redis | sum | SIPp UAC + UAS | calls taken per node | Redis commands per call |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	for cfg in $CONFIGS; do
		echo "| $cfg | ${PARTS[$cfg]} | ${BEST[$cfg]:-none} | ${PER1K_H[$cfg]:-n/a} | ${PER1K_K[$cfg]:--} | ${PER1K_R[$cfg]:--} | **${PER1K_SUM[$cfg]:-n/a}** | ${PER1K_SIPP[$cfg]:-n/a} | ${SPREAD[$cfg]} | ${REDIS_PER_CALL[$cfg]:--} |"
	done
	echo
	echo "Per step (CPU over the step and its ${SETTLE_SECS} s settle time; \"rest of machine\" is the machine's busy time minus every process listed, i.e. other people's work):"
	echo
	echo "| offered calls/s | config | attempted | successful | failed | sent calls/s | handoff CPU s | Kamailio CPU s | Redis CPU s | handoff s / 1000 calls | Kamailio s / 1000 | Redis s / 1000 | sum s / 1000 | SIPp CPU s (s / 1000) | machine busy | rest of machine CPU s | load 1 min | notes |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s' "$ROWS"
} | tee -a "$RESULT_FILE"
log "results appended to $RESULT_FILE"
