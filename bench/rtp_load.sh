#!/usr/bin/env bash
# Media load (issue 3): N concurrent relayed G.711 calls (50 packets/s each
# way per call, 160-byte payloads) through handoff's relay, the same load
# through rtpengine (userspace forwarding) as the reference, and the same
# load with no relay at all (the baseline "added" latency is measured
# against). Loopback only; every port but the media ranges a random free
# one; every process stopped by PID on exit. The load generator is
# bench/rtp_load/ (cargo example rtp_load). Prints a markdown report.
#
# Tunables (environment): CALLS (the N steps), SECS (seconds of RTP per
# step), TARGETS, MEDIA_PORT_MIN/MAX (handoff's and rtpengine's ranges),
# RTPENGINE_THREADS (--num-threads; default: rtpengine's own), SOCKETS
# (generator sockets per side), NICE (run the relay and the generator at
# this nice level, e.g. -10, to keep other people's compiles on a shared
# machine from deciding the figures; default 0), RELAY_RT and GEN_RT (real-time
# priorities, below), HANDOFF_BIN, RTP_LOAD_BIN
# (skip the build).
#
# SRTP=1 (issue 14): SRTP on one leg, CPU per packet. Each load call is a
# chain of two relays, plain -> SRTP -> plain, so both generator ends stay
# plain and every packet is checked: handoff's MediaRelays hosted by a child
# of rtp_load (no SIP: the relay alone; it inherits the generator's
# priority, so leave RELAY_RT/GEN_RT at 0) and rtpengine as two ng calls per
# load call; each also as a plain chain for reference. TARGETS defaults to
# "handoff-chain handoff-srtp-chain rtpengine-chain rtpengine-srtp-chain".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

CALLS=${CALLS:-"250 500 1000 1500 2000"}
SECS=${SECS:-20}
SRTP=${SRTP:-0}
if ((SRTP)); then
	TARGETS=${TARGETS:-"handoff-chain handoff-srtp-chain rtpengine-chain rtpengine-srtp-chain"}
else
	TARGETS=${TARGETS:-"handoff rtpengine"}
fi
# Below the ephemeral range (32768+), so the OS's free ports stay out of
# it; both relays skip ports some other process holds.
MEDIA_PORT_MIN=${MEDIA_PORT_MIN:-10000}
MEDIA_PORT_MAX=${MEDIA_PORT_MAX:-29999}
RTPENGINE_THREADS=${RTPENGINE_THREADS:-}
SOCKETS=${SOCKETS:-8}
SETUP_RATE=${SETUP_RATE:-400}
NICE=${NICE:-0}
# RELAY_RT=n: the relay (handoff or rtpengine, all threads) under SCHED_FIFO
# priority n instead of NICE; give the generator a higher GEN_RT. Isolates
# the figures from other sessions' load; the kernel still keeps 5 % of each
# second for everything else (sched_rt_runtime_us).
RELAY_RT=${RELAY_RT:-0}
if ((RELAY_RT > 0)); then
	RUN=(chrt -f "$RELAY_RT")
else
	RUN=(nice -n "$NICE")
fi
# GEN_RT=n: the load generator under SCHED_FIFO priority n (chrt -f), so it
# sends on time however busy the machine is; it needs a third of a core at
# 100,000 packets/s and so cannot starve anything. 0: like the relay (NICE).
GEN_RT=${GEN_RT:-0}
if ((GEN_RT > 0)); then
	GEN=(chrt -f "$GEN_RT")
else
	GEN=("${RUN[@]}")
fi

for tool in python3 ss; do
	command -v "$tool" >/dev/null || {
		echo "$tool not found" >&2
		exit 1
	}
done
if [[ " $TARGETS " == *" rtpengine"* ]] && ! command -v rtpengine >/dev/null; then
	echo "rtpengine not found: apt-get install rtpengine (Debian 12: 10.5)" >&2
	exit 1
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/handoff-rtp-load.XXXXXX")
RESULTS_DIR=$HERE/results
RESULT_FILE=$RESULTS_DIR/rtp-load-$STAMP.md
mkdir -p "$RESULTS_DIR"
JSONL=$WORK/results.jsonl
: >"$JSONL"

log() { echo "[rtp_load $(date +%T)] $*" >&2; }

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
PIDS=()
TARGET_PID=""

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

# 2,000 calls are 8,000 sockets in handoff and 4,000 in rtpengine.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- binaries ------------------------------------------------------------------
HANDOFF=${HANDOFF_BIN:-}
LOADER=${RTP_LOAD_BIN:-}
if [[ -z $HANDOFF || -z $LOADER ]]; then
	log "cargo build --release --bin handoff --example rtp_load in $ROOT"
	(cd "$ROOT" && cargo build --release --quiet --bin handoff --example rtp_load) >&2
	HANDOFF=${HANDOFF:-$ROOT/target/release/handoff}
	LOADER=${LOADER:-$ROOT/target/release/examples/rtp_load}
fi
# Copies, so another session's rebuild of target/ cannot swap them mid-run.
cp "$HANDOFF" "$WORK/handoff"
cp "$LOADER" "$WORK/rtp_load"
HANDOFF_VERSION="handoff $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+changes')"
RTPENGINE_VERSION=$(rtpengine --version 2>&1 | sed -n 's/^Version: //p' | head -1)

# --- targets -----------------------------------------------------------------------
start_handoff() { # -> TARGET_PID, SIP_ADDR, UAS_PORT
	UAS_PORT=$(free_port)
	cat >"$WORK/handoff.toml" <<EOF
[sip]
listen_udp = ["127.0.0.1:0"]
listen_tcp = ["127.0.0.1:0"]

[limits]
# Two RTP/RTCP pairs (4 ports) a call: what the media range holds.
max_calls = $(( (MEDIA_PORT_MAX - MEDIA_PORT_MIN + 1) / 4 ))
max_calls_per_second = 5000
drain_timeout_secs = 2

[log]
level = "warn"

[http]
listen = "127.0.0.1:0"

[media]
mode = "relay"
ip = "127.0.0.1"
port_min = $MEDIA_PORT_MIN
port_max = $MEDIA_PORT_MAX

[[route]]
prefix = ""
org_id = "org-bench"
agent_id = "agent-bench"
ai_agent_uri = "sip:ai@127.0.0.1:$UAS_PORT"
EOF
	# Emptied here, not by the background redirect below: that one may run
	# after the grep, which would then read the previous handoff's port.
	: >"$WORK/handoff.out"
	"${RUN[@]}" "$WORK/handoff" run --config "$WORK/handoff.toml" >"$WORK/handoff.out" 2>>"$WORK/handoff.err" &
	TARGET_PID=$!
	PIDS+=("$TARGET_PID")
	SIP_ADDR=$(wait_line "$WORK/handoff.out" "listening udp " "$TARGET_PID" "$WORK/handoff.err")
	sleep 0.5
}

start_rtpengine() { # -> TARGET_PID, NG_ADDR
	local port i threads=()
	port=$(free_port)
	[[ -n $RTPENGINE_THREADS ]] && threads=(--num-threads="$RTPENGINE_THREADS")
	# Userspace forwarding (--table=-1), foreground, warnings only (as handoff).
	"${RUN[@]}" rtpengine --config-file=none --table=-1 --foreground --log-stderr --log-level=4 \
		--interface=127.0.0.1 --listen-ng=127.0.0.1:"$port" \
		--port-min="$MEDIA_PORT_MIN" --port-max="$MEDIA_PORT_MAX" --delete-delay=0 \
		"${threads[@]}" >"$WORK/rtpengine.out" 2>>"$WORK/rtpengine.err" &
	TARGET_PID=$!
	PIDS+=("$TARGET_PID")
	for ((i = 0; i < 150; i++)); do
		[[ -n $(ss -Hlun "sport = :$port") ]] && break
		kill -0 "$TARGET_PID" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z $(ss -Hlun "sport = :$port") ]]; then
		log "rtpengine is not listening on udp 127.0.0.1:$port; stderr:"
		tail -20 "$WORK/rtpengine.err" >&2
		exit 1
	fi
	NG_ADDR=127.0.0.1:$port
	sleep 0.5
}

stop_target() {
	stop_pid "$TARGET_PID" 5
	TARGET_PID=""
}

run_loader() { # mode calls [args...] -> one JSON line appended to $JSONL
	local mode=$1 n=$2 rc=0 hard
	shift 2
	hard=$((SECS + n / SETUP_RATE * 2 + 60))
	timeout -k 5 "$hard" "${GEN[@]}" "$WORK/rtp_load" --mode "$mode" --calls "$n" --secs "$SECS" \
		--sockets "$SOCKETS" --setup-rate "$SETUP_RATE" "$@" \
		>"$WORK/$mode-$n.json" 2>"$WORK/$mode-$n.err" || rc=$?
	cat "$WORK/$mode-$n.err" >&2
	if ((rc != 0)) || [[ ! -s $WORK/$mode-$n.json ]]; then
		log "$mode at $n calls: rtp_load exited $rc"
		echo "{\"mode\": \"$mode\", \"calls_wanted\": $n, \"failed\": $rc}" >>"$JSONL"
		return 0
	fi
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["load_avg"]=open("/proc/loadavg").read().split()[0]; print(json.dumps(d))' \
		"$WORK/$mode-$n.json" >>"$JSONL"
}

# --- run ---------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $WORK; steps: $CALLS calls, $SECS s each; targets: $TARGETS"
for n in $CALLS; do
	log "== $n calls: no relay (baseline)"
	run_loader direct "$n"
	for t in $TARGETS; do
		log "== $n calls: $t"
		case $t in
		handoff-chain | handoff-srtp-chain)
			# The relays run in rtp_load's own child, measured by its PID.
			run_loader "$t" "$n" --port-min "$MEDIA_PORT_MIN" --port-max "$MEDIA_PORT_MAX"
			continue
			;;
		rtpengine-chain | rtpengine-srtp-chain) start_rtpengine ;;
		*) "start_$t" ;;
		esac
		if [[ $t == handoff ]]; then
			run_loader handoff "$n" --sip "$SIP_ADDR" --uas-port "$UAS_PORT" --pid "$TARGET_PID"
		else
			run_loader "$t" "$n" --ng "$NG_ADDR" --pid "$TARGET_PID"
		fi
		if ! kill -0 "$TARGET_PID" 2>/dev/null; then
			log "$t exited during the step"
		fi
		stop_target
	done
done

{
	echo
	echo "## Media relay load, $STAMP"
	echo
	echo "- command: \`bench/rtp_load.sh\` (SRTP=$SRTP CALLS=\"$CALLS\" SECS=$SECS SOCKETS=$SOCKETS NICE=$NICE RELAY_RT=$RELAY_RT GEN_RT=$GEN_RT TARGETS=\"$TARGETS\")"
	echo "- handoff: $HANDOFF_VERSION; rtpengine: $RTPENGINE_VERSION, userspace (--table=-1), threads: ${RTPENGINE_THREADS:-default}"
	echo "- host: $(nproc) cores, $(uname -sr); the generator and the relay share them;"
	echo "  load average before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	python3 "$HERE/rtp_load_report.py" "$JSONL"
} | tee -a "$RESULT_FILE"
log "results appended to $RESULT_FILE; raw JSON in $JSONL"
