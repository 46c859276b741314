#!/usr/bin/env bash
# Compares mailmerge end to end (CSV → template → MIME → DNS → SMTP) with Postfix's own load
# generator, smtp-source, against the same smtp-sink on loopback: same message count, same
# message size, same number of parallel sessions. Needs Debian's `postfix` package
# (smtp-source, smtp-sink). Prints the median of RUNS runs for each.
#
#   benches/vs-smtp-source.sh            # 20,000 messages, 2,000 bytes, 50 sessions, 5 runs
#   N=100000 SESSIONS=50 RUNS=3 benches/vs-smtp-source.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
SIZE=${SIZE:-2000}
SESSIONS=${SESSIONS:-50}
RUNS=${RUNS:-5}
SINK=${SINK:-127.0.0.9:2526}

for tool in smtp-sink smtp-source; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install postfix" >&2; exit 2; }
done

cargo bench --bench delivery --no-run >/dev/null 2>&1
BENCH=$(ls -t target/release/deps/delivery-* | grep -v '\.d$' | head -1)

smtp-sink -u nobody -c "$SINK" 1000 >/dev/null 2>&1 &
SINK_PID=$!
trap 'kill $SINK_PID 2>/dev/null' EXIT
sleep 0.5

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

src_rates=()
mm_rates=()
for i in $(seq "$RUNS"); do
    start=$(date +%s.%N)
    smtp-source -d -s "$SESSIONS" -m "$N" -l "$SIZE" "$SINK"
    end=$(date +%s.%N)
    src_rates+=("$(awk -v n="$N" -v a="$start" -v b="$end" 'BEGIN {print n / (b - a)}')")
    line=$(MAILMERGE_BENCH_TARGET=$SINK MAILMERGE_BENCH_N=$N MAILMERGE_BENCH_SESSIONS=$SESSIONS \
        MAILMERGE_BENCH_SITES=1 MAILMERGE_BENCH_DOMAINS=500 MAILMERGE_BENCH_SIZE=$SIZE "$BENCH")
    echo "$line"
    mm_rates+=("$(echo "$line" | sed -E 's/.* = ([0-9]+) msg\/s.*/\1/')")
done
src=$(printf '%s\n' "${src_rates[@]}" | median)
mm=$(printf '%s\n' "${mm_rates[@]}" | median)
printf 'smtp-source: median %.0f msg/s over %d runs\n' "$src" "$RUNS"
printf 'mailmerge:   median %.0f msg/s over %d runs (%.2fx smtp-source)\n' "$mm" "$RUNS" "$(awk -v a="$mm" -v b="$src" 'BEGIN {print a / b}')"
