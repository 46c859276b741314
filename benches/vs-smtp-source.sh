#!/usr/bin/env bash
# Compares mailmerge end to end (CSV → template → MIME → DNS → SMTP) with Postfix's own load
# generator, smtp-source, against the same smtp-sink on loopback: same message count, same
# message size, same number of parallel sessions. mailmerge is the release binary run as a
# user runs it (benches/delivery.rs starts it: default suppression list with SUPPRESSED
# entries, sender memory, MTA-STS/DANE lookups and journal on), timed from process start to
# exit. Needs Debian's `postfix` package (smtp-source, smtp-sink). Runs alternate; prints the
# median of RUNS runs for each and the median of the per-round ratios.
#
#   benches/vs-smtp-source.sh            # 20,000 messages, 2,000 bytes, 50 sessions, 5 runs
#   N=100000 SESSIONS=50 RUNS=3 benches/vs-smtp-source.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
SIZE=${SIZE:-2000}
SESSIONS=${SESSIONS:-50}
RUNS=${RUNS:-5}
SUPPRESSED=${SUPPRESSED:-100000}
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
ratios=()
for i in $(seq "$RUNS"); do
    start=$(date +%s.%N)
    smtp-source -d -s "$SESSIONS" -m "$N" -l "$SIZE" "$SINK"
    end=$(date +%s.%N)
    src_rates+=("$(awk -v n="$N" -v a="$start" -v b="$end" 'BEGIN {print n / (b - a)}')")
    out=$(MAILMERGE_BENCH_TARGET=$SINK MAILMERGE_BENCH_N=$N MAILMERGE_BENCH_SESSIONS=$SESSIONS \
        MAILMERGE_BENCH_SITES=1 MAILMERGE_BENCH_DOMAINS=500 MAILMERGE_BENCH_SIZE=$SIZE \
        MAILMERGE_BENCH_SUPPRESSED=$SUPPRESSED "$BENCH")
    echo "$out"
    line=$(echo "$out" | head -1)
    mm_rates+=("$(echo "$line" | sed -E 's/.* = ([0-9]+) msg\/s.*/\1/')")
    ratios+=("$(awk -v a="${mm_rates[-1]}" -v b="${src_rates[-1]}" 'BEGIN {print a / b}')")
done
src=$(printf '%s\n' "${src_rates[@]}" | median)
mm=$(printf '%s\n' "${mm_rates[@]}" | median)
printf 'smtp-source: median %.0f msg/s over %d runs\n' "$src" "$RUNS"
printf 'mailmerge:   median %.0f msg/s over %d runs (%.2fx smtp-source; median of the rounds %.2fx)\n' \
    "$mm" "$RUNS" "$(awk -v a="$mm" -v b="$src" 'BEGIN {print a / b}')" \
    "$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
