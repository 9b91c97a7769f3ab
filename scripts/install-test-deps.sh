#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain (Debian packages):
# SIPp (sip-tester), Kamailio 5.6 (kamailio: tests/cluster_kamailio.rs and
# tests/deploy_files.rs; with kamailio-tls-modules, tests/tls_kamailio.rs),
# promtool (prometheus: tests/deploy_files.rs), redis-server
# (tests/session_redis.rs, tests/cluster_redis.rs) and rtpengine
# (rtpengine-daemon, userspace: tests/srtp_rtpengine.rs, bench/rtp_load.sh).
# Safe to run again: does nothing when everything is there.
set -euo pipefail
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
[ -f /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || need+=(kamailio-tls-modules)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v rtpengine >/dev/null 2>&1 || need+=(rtpengine-daemon)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    # No recommends: the prometheus package would pull in a web UI's assets only.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
sipp -v 2>/dev/null | grep -m1 -i "sipp" || true
{ command -v kamailio >/dev/null 2>&1 && kamailio -v; } 2>/dev/null | head -1 || /usr/sbin/kamailio -v 2>/dev/null | head -1 || true
promtool --version 2>/dev/null | head -1 || true
redis-server --version || true
rtpengine --version 2>&1 | head -1 || true
