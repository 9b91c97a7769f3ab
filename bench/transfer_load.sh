#!/usr/bin/env bash
# Load benchmark of transfers (issue 4): calls answered by the AI agent and
# handed by REFER to a Zendesk stand-in, at rising rates. Per step: calls on
# each SIPp instance, transfers from handoff's /metrics, the time from REFER
# received to transfer INVITE sent (p50, p99) from handoff's histogram and,
# independently, from a loopback capture, and handoff's CPU per call.
# See bench/README.md.
#
#   bench/transfer_load.sh
#
# Carrier (SIPp UAC, sipp-scenarios/carrier_uac_transfer.xml without its two
# X-OPENCX-* lines) -> handoff -> AI agent (SIPp UAS, ai_agent_refer_uas.xml:
# answers, REFERs to Zendesk after REFER_AFTER_MS) ; handoff -> Zendesk
# (SIPp UAS, zendesk_uas.xml: checks the transfer INVITE, answers). UDP on
# 127.0.0.1, media relay on (it is required for a transfer), no RTP sent.
#
# Before each transfer step, unless BASIC=0, the same number of basic calls
# (carrier_uac.xml -> handoff -> ai_agent_uas.xml: answered, no REFER, the
# same hold time, the relay on) go through the same handoff at the same rate,
# so the CPU of a transferred call is read beside a basic one's in one run.
#
# Tunables (environment): RATES, STEP_SECS, CALL_MS, REFER_AFTER_MS,
# SETTLE_SECS, CAPTURE (1: tcpdump on lo if installed; 0: off), BASIC,
# HANDOFF_BIN (skip the build and run this binary).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SCENARIOS=$ROOT/sipp-scenarios

RATES=${RATES:-"50 100 200 300 400 600 800"}
STEP_SECS=${STEP_SECS:-10}         # seconds of new calls per step
CALL_MS=${CALL_MS:-2000}           # the caller hangs up this long after the answer
REFER_AFTER_MS=${REFER_AFTER_MS:-200} # the AI agent REFERs this long after the ACK
SETTLE_SECS=${SETTLE_SECS:-7}      # after the carrier is done: the UASes' 4 s timewait
CAPTURE=${CAPTURE:-1}
BASIC=${BASIC:-1}                  # 1: a basic-call step before each transfer step
CALLED=+18005550100
BASIC_CALLED=+18005550199
AGENT_ID=agent-bench

for tool in sipp python3 ss getconf timeout; do
	command -v "$tool" >/dev/null || {
		case $tool in
		sipp) echo "sipp not found: apt-get install sip-tester (SIPp 3.6)" >&2 ;;
		*) echo "$tool not found" >&2 ;;
		esac
		exit 1
	}
done
if [[ $CAPTURE == 1 ]] && ! command -v tcpdump >/dev/null; then
	echo "tcpdump not found (apt-get install tcpdump): no wire measurement" >&2
	CAPTURE=0
fi

CLK_TCK=$(getconf CLK_TCK)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/handoff-transfer-bench.XXXXXX")
RESULTS_DIR=$HERE/results
RESULT_FILE=$RESULTS_DIR/transfer-$STAMP.md
mkdir -p "$RESULTS_DIR"
STATS=$HERE/transfer_stats.py

log() { echo "[transfer_load $(date +%T)] $*" >&2; }

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
PIDS=()
cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	# handoff first, while the UASes can still answer what it sends as it
	# drains (drain_timeout_secs = 2); then the rest, newest first.
	[[ -n ${TIMEOUT_PID:-} ]] && stop_pid "$TIMEOUT_PID" 10
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}" 5
	done
	log "work files in $WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Every process gets a hard bound: the whole run, with room to spare.
n_steps=$(($(wc -w <<<"$RATES") * (BASIC + 1)))
RUN_BOUND=$((n_steps * (STEP_SECS + CALL_MS / 1000 + SETTLE_SECS + 40) + 120))

# --- figures ----------------------------------------------------------------
cpu_ticks() { # utime + stime of handoff (all threads)
	sed 's/^.*) //' "/proc/$HANDOFF_PID/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0
}
udp_rcvbuf_errors() { # datagrams the kernel dropped for a full socket buffer (this netns)
	awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}
our_socket_drops() { # drops on handoff's, the AI agent's and Zendesk's SIP sockets
	awk -v a="$(printf '0100007F:%04X' "$HANDOFF_PORT")" -v b="$(printf '0100007F:%04X' "$AI_PORT")" \
		-v c="$(printf '0100007F:%04X' "$ZENDESK_PORT")" '$2 == a || $2 == b || $2 == c { d += $NF } END { print d + 0 }' /proc/net/udp
}
csv_last() { # file column -> value of column on the last line of a SIPp -trace_stat CSV
	awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		{ last = $c } END { print (c && last != "" ? last + 0 : 0) }' "$1" 2>/dev/null || echo 0
}
csv_failures() { # non-zero Failed*(C) causes of the last line
	awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) h[i] = $i; next } { for (i in h) v[i] = $i }
		END { for (i in h) if (h[i] ~ /^Failed.+\(C\)$/ && h[i] != "FailedCall(C)" && v[i] + 0 > 0) { n = h[i]; sub(/^Failed/, "", n); sub(/\(C\)$/, "", n); out = out sep n "=" v[i]; sep = " " } print out }' "$1" 2>/dev/null || true
}
scrape() { # /metrics -> file
	python3 - "$HTTP_ADDR" "$1" <<'EOF'
import sys, urllib.request
addr, path = sys.argv[1], sys.argv[2]
open(path, "w").write(urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode())
EOF
}
kv() { # key file -> value of key=value
	sed -n "s/^$1=//p" "$2" | head -1
}

# --- handoff -------------------------------------------------------------------
BIN=${HANDOFF_BIN:-}
if [[ -z $BIN ]]; then
	log "cargo build --release in $ROOT"
	(cd "$ROOT" && cargo build --release --quiet) >&2
	BIN=$ROOT/target/release/handoff
fi
if [[ -n ${HANDOFF_BIN:-} ]]; then
	VERSION="handoff binary $BIN (not built by the script; repository at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
else
	VERSION="handoff $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes') ($BIN)"
fi
AI_PORT=$(free_port)
ZENDESK_PORT=$(free_port)
BASIC_AI_PORT=$(free_port)
ZENDESK_URI="sip:support@127.0.0.1:$ZENDESK_PORT"
cat >"$WORK/handoff.toml" <<EOF
[sip]
listen_udp = ["127.0.0.1:0"]
listen_tcp = []

[limits]
# 10000..29999 holds 5,000 calls (4 ports a call).
max_calls = 5000
max_calls_per_second = 5000
drain_timeout_secs = 2

[session]
default_country = "US"

[log]
level = "warn"

[http]
listen = "127.0.0.1:0"

# A transfer needs the relay (the caller's media moves to the target without
# a re-INVITE). Three port pairs per call during a transfer; below Linux's
# ephemeral range so SIPp's own ports rarely collide (the pool skips them).
[media]
mode = "relay"
port_min = 10000
port_max = 29999

[transfer]
# The IP-literal target is allowed only as a named destination.
allow = ["*.zendesk.sip.twilio.com"]

[[transfer.destination]]
name = "zendesk"
uri = "$ZENDESK_URI"

# The basic calls' own AI agent: it answers and never REFERs.
[[route]]
number = "$BASIC_CALLED"
org_id = "org-bench"
agent_id = "$AGENT_ID"
ai_agent_uri = "sip:ai@127.0.0.1:$BASIC_AI_PORT"

[[route]]
prefix = ""
org_id = "org-bench"
agent_id = "$AGENT_ID"
ai_agent_uri = "sip:ai@127.0.0.1:$AI_PORT"
EOF
timeout -k 5 "$RUN_BOUND" "$BIN" run --config "$WORK/handoff.toml" >"$WORK/handoff.out" 2>"$WORK/handoff.err" &
TIMEOUT_PID=$!
PIDS+=("$TIMEOUT_PID")
# The http line comes after the SIP ones.
HTTP_ADDR=$(wait_line "$WORK/handoff.out" "listening http " "$TIMEOUT_PID" "$WORK/handoff.err")
SIP_ADDR=$(wait_line "$WORK/handoff.out" "listening udp " "$TIMEOUT_PID")
HANDOFF_PID=$(ps -o pid= --ppid "$TIMEOUT_PID" | head -1 | tr -d ' ')
HANDOFF_PORT=${SIP_ADDR##*:}
log "handoff $VERSION: sip udp $SIP_ADDR, http $HTTP_ADDR (pid $HANDOFF_PID)"

# --- the two UASes, up for the whole run ----------------------------------------
start_uas() { # name port scenario args...
	local name=$1 port=$2 scenario=$3 i
	shift 3
	# shellcheck disable=SC2046
	timeout -k 5 "$RUN_BOUND" sipp -sf "$SCENARIOS/$scenario" -i 127.0.0.1 -mi 127.0.0.1 \
		-p "$port" -cp "$(free_port)" -mp "$(free_media_port)" -t u1 -nostdin "$@" \
		-trace_stat -stf "$WORK/$name.csv" -fd 1 -trace_err -error_file "$WORK/${name}_errors.log" \
		>/dev/null 2>"$WORK/$name.err" &
	PIDS+=("$!")
	for ((i = 0; i < 100; i++)); do
		[[ -n $(ss -Hlun "sport = :$port") ]] && return 0
		sleep 0.1
	done
	log "SIPp $name did not bind udp 127.0.0.1:$port"
	cat "$WORK/$name.err" >&2
	exit 1
}
start_uas zendesk "$ZENDESK_PORT" zendesk_uas.xml -set agent_id "$AGENT_ID"
start_uas ai "$AI_PORT" ai_agent_refer_uas.xml -key refer_to "$ZENDESK_URI" -d "$REFER_AFTER_MS"
((BASIC)) && start_uas basic_ai "$BASIC_AI_PORT" ai_agent_uas.xml

# The carrier: the transfer scenario without its spoofed X-OPENCX-* headers
# (handoff strips them and logs a warning per call, which would be measured).
UAC_SCENARIO=$WORK/carrier_uac_transfer_plain.xml
grep -v '^ *X-OPENCX-' "$SCENARIOS/carrier_uac_transfer.xml" >"$UAC_SCENARIO"
BASIC_SCENARIO=$WORK/carrier_uac_plain.xml
grep -v '^ *X-OPENCX-' "$SCENARIOS/carrier_uac.xml" >"$BASIC_SCENARIO"

run_carrier() { # name rate calls [scenario called] -> waits for it
	local name=$1 rate=$2 calls=$3 scenario=${4:-$UAC_SCENARIO} called=${5:-$CALLED} hard rc=0
	hard=$((calls / rate + CALL_MS / 1000 + 30))
	# shellcheck disable=SC2046
	timeout -k 5 "$((hard + 10))" sipp "$SIP_ADDR" -sf "$scenario" \
		-i 127.0.0.1 -mi 127.0.0.1 $(sipp_ports) -t u1 -nostdin -s "$called" \
		-r "$rate" -m "$calls" -l "$((rate * (CALL_MS / 1000 + 5)))" -d "$CALL_MS" \
		-recv_timeout 10000 -timeout "${hard}s" -timeout_error \
		-trace_stat -stf "$WORK/$name.csv" -fd 1 \
		-trace_err -error_file "$WORK/${name}_errors.log" \
		>/dev/null 2>"$WORK/$name.err" &
	PIDS+=("$!")
	wait "$!" || rc=$?
	return "$rc"
}

# The wire measurement: only INVITEs to the AI agent, REFERs to handoff and
# INVITEs to Zendesk pass the filter (first four payload bytes "INVI", "REFE").
start_capture() { # file
	local filter i
	filter="udp and ((dst port $AI_PORT and udp[8:4] = 0x494e5649)"
	filter+=" or (dst port $HANDOFF_PORT and udp[8:4] = 0x52454645)"
	filter+=" or (dst port $ZENDESK_PORT and udp[8:4] = 0x494e5649))"
	timeout -k 5 "$((STEP_SECS + CALL_MS / 1000 + SETTLE_SECS + 60))" \
		tcpdump -i lo -n -s 0 -B 16384 --time-stamp-precision=nano -w "$1" "$filter" \
		2>"$1.err" &
	CAPTURE_PID=$!
	PIDS+=("$CAPTURE_PID")
	for ((i = 0; i < 50; i++)); do
		grep -q 'listening on' "$1.err" 2>/dev/null && return 0
		sleep 0.1
	done
	log "tcpdump did not start: $(cat "$1.err")"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- warm-up, then the steps ------------------------------------------------------------
log "warm-up: 100 transfer calls at 20/s"
run_carrier warmup 20 100 || true
sleep "$SETTLE_SECS"

ROWS=""
LAT_ROWS=""
BEST=""
AT_200=""
for rate in $RATES; do
	calls=$((rate * STEP_SECS))
	basic_per1k="-"
	ratio="-"
	if ((BASIC)); then
		log "basic step: $rate calls/s, $calls calls"
		cpu0=$(cpu_ticks)
		rc=0
		run_carrier "basic-$rate" "$rate" "$calls" "$BASIC_SCENARIO" "$BASIC_CALLED" || rc=$?
		sleep "$SETTLE_SECS"
		cpu1=$(cpu_ticks)
		b_att=$(csv_last "$WORK/basic-$rate.csv" 'OutgoingCall(C)')
		b_bad=$(csv_last "$WORK/basic-$rate.csv" 'FailedCall(C)')
		basic_per1k=$(awk -v t="$((cpu1 - cpu0))" -v hz="$CLK_TCK" -v a="$b_att" \
			'BEGIN { if (a > 0) printf "%.3f", t / hz / (a / 1000); else print "n/a" }')
		((b_bad > 0 || rc != 0)) && basic_per1k="$basic_per1k ($b_bad of $b_att failed)"
		log "  basic: $b_att calls, $b_bad failed, ${basic_per1k} CPU s/1000"
	fi
	log "step: $rate calls/s, $calls calls"
	scrape "$WORK/step-$rate.before.prom"
	ai0=$(csv_last "$WORK/ai.csv" 'IncomingCall(C)')
	ai_ok0=$(csv_last "$WORK/ai.csv" 'SuccessfulCall(C)')
	ai_bad0=$(csv_last "$WORK/ai.csv" 'FailedCall(C)')
	z0=$(csv_last "$WORK/zendesk.csv" 'IncomingCall(C)')
	z_ok0=$(csv_last "$WORK/zendesk.csv" 'SuccessfulCall(C)')
	z_bad0=$(csv_last "$WORK/zendesk.csv" 'FailedCall(C)')
	drops0=$(udp_rcvbuf_errors)
	ours0=$(our_socket_drops)
	[[ $CAPTURE == 1 ]] && start_capture "$WORK/step-$rate.pcap"
	cpu0=$(cpu_ticks)
	rc=0
	run_carrier "step-$rate" "$rate" "$calls" || rc=$?
	sleep "$SETTLE_SECS"
	cpu1=$(cpu_ticks)
	scrape "$WORK/step-$rate.after.prom"
	if [[ $CAPTURE == 1 ]]; then
		stop_pid "$CAPTURE_PID" 5
		python3 "$STATS" pcap "$WORK/step-$rate.pcap" "$AI_PORT" "$HANDOFF_PORT" "$ZENDESK_PORT" \
			>"$WORK/step-$rate.pcap.txt"
		cap_dropped=$(sed -n 's/^\([0-9]*\) packets dropped by kernel$/\1/p' "$WORK/step-$rate.pcap.err")
	fi
	python3 "$STATS" metrics "$WORK/step-$rate.before.prom" "$WORK/step-$rate.after.prom" \
		>"$WORK/step-$rate.metrics.txt"
	m=$WORK/step-$rate.metrics.txt
	p=$WORK/step-$rate.pcap.txt

	att=$(csv_last "$WORK/step-$rate.csv" 'OutgoingCall(C)')
	ok=$(csv_last "$WORK/step-$rate.csv" 'SuccessfulCall(C)')
	bad=$(csv_last "$WORK/step-$rate.csv" 'FailedCall(C)')
	ai_n=$(($(csv_last "$WORK/ai.csv" 'IncomingCall(C)') - ai0))
	ai_ok=$(($(csv_last "$WORK/ai.csv" 'SuccessfulCall(C)') - ai_ok0))
	ai_bad=$(($(csv_last "$WORK/ai.csv" 'FailedCall(C)') - ai_bad0))
	z_n=$(($(csv_last "$WORK/zendesk.csv" 'IncomingCall(C)') - z0))
	z_ok=$(($(csv_last "$WORK/zendesk.csv" 'SuccessfulCall(C)') - z_ok0))
	z_bad=$(($(csv_last "$WORK/zendesk.csv" 'FailedCall(C)') - z_bad0))
	tr_ok=$(kv transfers_succeeded_total "$m")
	tr_bad=$(kv transfers_failed_total "$m")
	refused=$(kv refers_refused_total "$m")
	cpu_s=$(awk -v t="$((cpu1 - cpu0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
	per1k=$(awk -v c="$cpu_s" -v a="$att" 'BEGIN { if (a > 0) printf "%.3f", c / (a / 1000); else print "n/a" }')

	notes=$(csv_failures "$WORK/step-$rate.csv")
	[[ -n $notes ]] && notes="carrier: $notes"
	f=$(csv_failures "$WORK/ai.csv")
	[[ -n $f && $ai_bad -gt 0 ]] && notes="$notes; AI (cumulative): $f"
	f=$(csv_failures "$WORK/zendesk.csv")
	[[ -n $f && $z_bad -gt 0 ]] && notes="$notes; Zendesk (cumulative): $f"
	((rc != 0)) && notes="$notes; carrier sipp exit $rc"
	((${refused:-0} > 0)) && notes="$notes; REFERs refused $refused"
	for k in calls_failed_total transaction_timeouts_total sip_send_errors_total; do
		v=$(kv "$k" "$m")
		((${v:-0} > 0)) && notes="$notes; $k +$v"
	done
	drops=$(($(udp_rcvbuf_errors) - drops0))
	# Netns-wide, so other people's UDP load shows here too; ours: handoff's,
	# the AI agent's and Zendesk's SIP sockets.
	((drops > 0)) && notes="$notes; udp-rcvbuf-drops=$drops (on our SIP sockets $(($(our_socket_drops) - ours0)))"
	[[ $CAPTURE == 1 && ${cap_dropped:-0} -gt 0 ]] && notes="$notes; capture dropped $cap_dropped"
	kill -0 "$HANDOFF_PID" 2>/dev/null || notes="$notes; HANDOFF EXITED"
	notes=${notes#; }

	if ((BASIC)); then
		ratio=$(awk -v t="$per1k" -v b="${basic_per1k%% *}" 'BEGIN { if (b + 0 > 0 && t + 0 > 0) printf "%.2f", t / b; else print "n/a" }')
	fi
	ROWS+="| $rate | $att / $ok / $bad | $ai_n / $ai_ok / $ai_bad | $z_n / $z_ok / $z_bad | $tr_ok / $tr_bad | $cpu_s | $per1k | $basic_per1k | $ratio | $notes |"$'\n'
	if [[ $CAPTURE == 1 ]]; then
		wire="$(kv pcap_p50_us "$p") | $(kv pcap_p99_us "$p") | $(kv pcap_max_us "$p") | $(kv pcap_matched "$p") | $(kv pcap_over_1ms "$p")"
	else
		wire="- | - | - | - | -"
	fi
	LAT_ROWS+="| $rate | $(kv hist_count "$m") | $(kv hist_p50_us "$m") | $(kv hist_p99_us "$m") | $(kv hist_mean_us "$m") | $(kv hist_max_le_us "$m") | $(kv hist_over_1ms "$m") | $wire |"$'\n'
	log "  carrier $att/$ok/$bad, AI $ai_n/$ai_ok/$ai_bad, Zendesk $z_n/$z_ok/$z_bad, transfers ok/failed $tr_ok/$tr_bad, cpu ${cpu_s}s ($per1k s/1000)"
	log "  REFER->INVITE histogram p50 $(kv hist_p50_us "$m") us p99 $(kv hist_p99_us "$m") us; wire p50 $(kv pcap_p50_us "$p" 2>/dev/null) us p99 $(kv pcap_p99_us "$p" 2>/dev/null) us ${notes:+($notes)}"

	clean=0
	if ((att == calls && ok == calls && bad == 0 && ai_ok == calls && ai_bad == 0 && z_ok == calls && z_bad == 0 && tr_ok == calls && tr_bad == 0)); then
		clean=1
		BEST=$rate
	fi
	if ((rate == 200)); then
		AT_200="p50 $(kv hist_p50_us "$m") us, p99 $(kv hist_p99_us "$m") us (histogram)"
		[[ $CAPTURE == 1 ]] && AT_200+="; p50 $(kv pcap_p50_us "$p") us, p99 $(kv pcap_p99_us "$p") us (wire)"
		((clean)) || AT_200+="; NOT all calls succeeded"
	fi
	if ! kill -0 "$HANDOFF_PID" 2>/dev/null; then
		log "handoff exited; stopping"
		break
	fi
	if ((att == 0 || bad * 5 > att)); then
		log "more than 20% of calls failed: stopping the ramp"
		break
	fi
done

BOUNDS=$(sed -n 's/^hist_bounds_us=//p' "$WORK"/step-*.metrics.txt | head -1)
{
	echo
	echo "## Transfers, $STAMP"
	echo
	echo "- command: \`bench/transfer_load.sh\` (RATES=\"$RATES\" STEP_SECS=$STEP_SECS CALL_MS=$CALL_MS REFER_AFTER_MS=$REFER_AFTER_MS CAPTURE=$CAPTURE BASIC=$BASIC)"
	echo "- target: $VERSION, media relay on, no RTP sent"
	echo "- SIPp: $(sipp -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*' | sed 's/\.$//'): carrier_uac_transfer.xml (no X-OPENCX lines) -> handoff -> ai_agent_refer_uas.xml -> REFER -> handoff -> zendesk_uas.xml, UDP (-t u1)"
	echo "- host: $(nproc) cores, $(uname -sr); three SIPp instances, tcpdump and handoff share them;"
	echo "  load average before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	echo "Calls (attempted / successful / failed) per SIPp instance, transfers per handoff's counters:"
	echo
	echo "| offered calls/s | carrier | AI agent | Zendesk | transfers succeeded / failed | handoff CPU s | CPU s / 1000 transferred calls | CPU s / 1000 basic calls (same rate, before) | transferred / basic | notes |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s' "$ROWS"
	echo
	echo "REFER received -> transfer INVITE sent, microseconds: handoff's histogram (bucket bounds up to 2 ms: $BOUNDS us; p50/p99 interpolated inside a bucket, max = upper bound of the highest non-empty bucket) and the wire (loopback capture, exact per transfer):"
	echo
	echo "| offered calls/s | hist n | hist p50 | hist p99 | hist mean | hist max <= | hist > 1 ms | wire p50 | wire p99 | wire max | wire n | wire > 1 ms |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s' "$LAT_ROWS"
	echo
	echo "Highest offered rate with every call and transfer successful: **${BEST:-none}** calls/s."
	echo "At 200 calls/s: ${AT_200:-not run}."
} | tee -a "$RESULT_FILE"
log "results appended to $RESULT_FILE"
