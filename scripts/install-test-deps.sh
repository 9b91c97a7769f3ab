#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: SIPp (Debian package
# sip-tester). Safe to run again: does nothing when everything is there.
set -euo pipefail
if ! command -v sipp >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq sip-tester >/dev/null
fi
sipp -v 2>/dev/null | grep -m1 -i "sipp" || true
