#!/usr/bin/env bash
# Times the release binary's run of the interop campaign (2,000 rows, the same list and
# template) against a private chasquid, which swallows commands pipelined behind the final dot,
# and against a private Postfix, both on loopback with STARTTLS, in alternating runs; and
# Postfix's smtp-source against each server for chasquid's floor. Prints every run with the
# load average before it, then the medians and the ratios (benches/chasquid_vs_postfix.rs).
# Needs root and the servers `.ci/run servers` installs.
#
#   benches/chasquid-vs-postfix.sh                  # 5 rounds, mailmerge's default 10 connections
#   RUNS=7 CONNECTIONS=3 benches/chasquid-vs-postfix.sh
#   CHASQUID_V=1 benches/chasquid-vs-postfix.sh     # chasquid logging every command, as in the test
set -euo pipefail
cd "$(dirname "$0")/.."

export MAILMERGE_BENCH_RUNS=${RUNS:-5}
export MAILMERGE_BENCH_N=${N:-2000}
export MAILMERGE_BENCH_CHASQUID_V=${CHASQUID_V:-0}
if [ -n "${CONNECTIONS:-}" ]; then export MAILMERGE_BENCH_CONNECTIONS=$CONNECTIONS; fi

cargo bench --bench chasquid_vs_postfix --no-run >/dev/null 2>&1
BENCH=$(ls -t target/release/deps/chasquid_vs_postfix-* | grep -v '\.d$' | head -1)
# The binary as a user builds it (`cargo bench` builds one with the dev-dependencies' features).
cargo build --release --bin mailmerge >/dev/null 2>&1
MAILMERGE_BIN=$PWD/target/release/mailmerge "$BENCH"
