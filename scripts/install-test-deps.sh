#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: SIPp (Debian package
# sip-tester) and redis-server (Debian package redis-server, for tests/session_redis.rs).
# Safe to run again: does nothing when everything is there.
set -euo pipefail
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
sipp -v 2>/dev/null | grep -m1 -i "sipp" || true
redis-server --version || true
