#!/usr/bin/env bash
# SIP over TLS (issue 14): full TLS handshakes per second (TLS 1.3 and 1.2, an
# ECDSA P-256 certificate, no session resumption) and memory per idle TLS
# connection (PSS delta of the target over N connections held open), handoff's
# rustls listener against Kamailio's TLS module (OpenSSL) in the same run, same
# certificate, same client. Loopback only, random free ports, every process
# stopped by PID on exit. The client is bench/tls_load/ (cargo example tls_load).
# Prints a markdown report on stdout; progress on stderr.
#
# Tunables (environment): SECS (seconds of handshakes per step, default 10),
# CONC (concurrent handshaking clients, default 4), IDLE (idle connections,
# default 1000), TARGETS ("handoff kamailio"), VERSIONS ("1.3 1.2"),
# HANDOFF_BIN, TLS_LOAD_BIN (skip the build).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SECS=${SECS:-10}
CONC=${CONC:-4}
IDLE=${IDLE:-1000}
TARGETS=${TARGETS:-"handoff kamailio"}
VERSIONS=${VERSIONS:-"1.3 1.2"}
HANDOFF_BIN=${HANDOFF_BIN:-$ROOT/target/release/handoff}
TLS_LOAD_BIN=${TLS_LOAD_BIN:-$ROOT/target/release/examples/tls_load}
KAM_MODULES=/usr/lib/x86_64-linux-gnu/kamailio/modules

if [[ ! -x $HANDOFF_BIN || ! -x $TLS_LOAD_BIN ]]; then
	echo "building handoff and tls_load (release)..." >&2
	(cd "$ROOT" && cargo build --release --bin handoff --example tls_load >&2)
fi
if [[ " $TARGETS " == *" kamailio "* && ! -f $KAM_MODULES/tls.so ]]; then
	echo "kamailio-tls-modules not installed: scripts/install-test-deps.sh" >&2
	exit 1
fi

WORK=$(mktemp -d /tmp/handoff-bench-tls.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# PSS in kB of a process and its children (Kamailio's workers share memory: PSS
# counts each shared page once across them).
pss_kb() {
	local total=0 p
	for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
		local v
		v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

# CPU ticks (user + system) of a process and its children.
cpu_ticks() {
	local total=0 p
	for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
		local v
		v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

"$TLS_LOAD_BIN" certs "$WORK/certs"
CERT=$WORK/certs/cert.pem
KEY=$WORK/certs/key.pem
CA=$WORK/certs/ca.pem
HZ=$(getconf CLK_TCK)

start_handoff() {
	local udp tls http
	udp=$(free_port)
	tls=$(free_port)
	http=$(free_port)
	cat >"$WORK/handoff.toml" <<EOF
[sip]
listen_udp = ["127.0.0.1:$udp"]
listen_tcp = []
listen_tls = ["127.0.0.1:$tls"]
tls_cert = "$CERT"
tls_key = "$KEY"
tcp_idle_timeout_secs = 3600
tcp_max_connections = 16000
tcp_max_connections_per_ip = 16000
[http]
listen = "127.0.0.1:$http"
[log]
level = "warn"
[[route]]
default = true
org_id = "bench"
agent_id = "bench"
ai_agent_uri = "sip:ai@127.0.0.1:9"
EOF
	"$HANDOFF_BIN" run --config "$WORK/handoff.toml" 2>"$WORK/handoff.log" >/dev/null &
	TARGET_PID=$!
	TARGET_ADDR=127.0.0.1:$tls
}

start_kamailio() {
	local udp tls
	udp=$(free_port)
	tls=$(free_port)
	cat >"$WORK/tls.cfg" <<EOF
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = $CERT
private_key = $KEY
EOF
	cat >"$WORK/kamailio.cfg" <<EOF
#!KAMAILIO
debug=1
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
tcp_max_connections=16000
tls_max_connections=16000
tcp_connection_lifetime=3600
listen=udp:127.0.0.1:$udp
listen=tls:127.0.0.1:$tls
enable_tls=yes
mpath="$KAM_MODULES/"
loadmodule "tls.so"
loadmodule "sl.so"
modparam("tls", "config", "$WORK/tls.cfg")
request_route {
    sl_send_reply("404", "Not here");
}
EOF
	kamailio -f "$WORK/kamailio.cfg" -DD -E -m 256 -M 8 -Y "$WORK" 2>"$WORK/kamailio.log" >/dev/null &
	TARGET_PID=$!
	TARGET_ADDR=127.0.0.1:$tls
}

wait_port() {
	local until=$((SECONDS + 15))
	while ((SECONDS < until)); do
		if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "${1##*:}" 2>/dev/null; then
			return 0
		fi
		sleep 0.2
	done
	echo "target did not listen on $1" >&2
	exit 1
}

echo "## SIP over TLS: handshakes and idle connections (issue 14), $(date -u +%Y-%m-%d)"
echo
echo "\`SECS=$SECS CONC=$CONC IDLE=$IDLE bench/tls_load.sh\` on $(nproc) cores; ECDSA P-256 leaf, full handshakes (no resumption)."
echo
echo "| target | TLS | handshakes/s | failed | target CPU ms / handshake | PSS per idle connection |"
echo "| --- | --- | --- | --- | --- | --- |"
for target in $TARGETS; do
	for version in $VERSIONS; do
		echo "$target TLS $version..." >&2
		"start_$target"
		PIDS+=("$TARGET_PID")
		wait_port "$TARGET_ADDR"
		sleep 1
		c0=$(cpu_ticks "$TARGET_PID")
		out=$("$TLS_LOAD_BIN" handshakes "$TARGET_ADDR" "$CA" "$version" "$SECS" "$CONC")
		c1=$(cpu_ticks "$TARGET_PID")
		rate=$(sed -n 's/^per_second=//p' <<<"$out")
		n=$(sed -n 's/^handshakes=//p' <<<"$out")
		failed=$(sed -n 's/^failed=//p' <<<"$out")
		cpu_ms=$(python3 -c "import sys; n=int(sys.argv[2]); print(f'{(int(sys.argv[1]) * 1000 / $HZ) / n:.3f}' if n else '-')" "$((c1 - c0))" "$n")
		# Idle connections: PSS before, N opened and held, PSS after.
		sleep 2
		p0=$(pss_kb "$TARGET_PID")
		fifo=$WORK/hold.$target.$version
		mkfifo "$fifo"
		"$TLS_LOAD_BIN" idle "$TARGET_ADDR" "$CA" "$version" "$IDLE" <"$fifo" >"$WORK/idle.out" &
		idle_pid=$!
		exec 9>"$fifo"
		until grep -q '^open=' "$WORK/idle.out" 2>/dev/null; do sleep 0.2; done
		sleep 2
		p1=$(pss_kb "$TARGET_PID")
		opened=$(sed -n 's/^open=\([0-9]*\).*/\1/p' "$WORK/idle.out")
		exec 9>&-
		wait "$idle_pid" || true
		rm -f "$fifo"
		per=$(python3 -c "import sys; o=int(sys.argv[2]); print(f'{int(sys.argv[1]) / o:.1f} kB ({o} open)' if o else '-')" "$((p1 - p0))" "$opened")
		echo "| $target | $version | $rate | $failed | $cpu_ms | $per |"
		kill "$TARGET_PID" 2>/dev/null || true
		wait "$TARGET_PID" 2>/dev/null || true
		PIDS=()
	done
done
echo
echo "Work dir (configs, logs): $WORK" >&2
