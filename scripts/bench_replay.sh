#!/usr/bin/env bash
# End-to-end replay benchmark: generates a synthetic log (default 10 000 nodes × 1 000 readings =
# 10 M readings, one a minute) and replays it through the whole dataflow (parse, validate, Kalman
# filter, ODE, rhythm windows, Parquet) with 1 and 2 workers, several times each; prints the
# median readings per second, the per-stage times and the bytes of state per node.
#
# Usage: scripts/bench_replay.sh [--nodes N] [--readings-per-node R] [--reps K]
# Needs ~1.5 GB of disk under $TMPDIR for the log and the lake. Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=10000 per_node=1000 reps=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --readings-per-node) per_node="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p kaiabc-pipeline
bin="${CARGO_TARGET_DIR:-target}/release/kaiabc"
work="$(mktemp -d "${TMPDIR:-/tmp}/kaiabc-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
days=$(python3 -c "print($per_node / 1440)")
log="$work/log.csv"
t0=$(date +%s.%N)
"$bin" datasets generate --nodes "$nodes" --days "$days" --interval-seconds 60 --seed 42 --output "$log"
t1=$(date +%s.%N)
lines=$(($(wc -l < "$log") - 1))
echo "# generated $lines readings for $nodes nodes ($(du -h "$log" | cut -f1)) in $(python3 -c "print(round($t1-$t0,1))") s"
for workers in 1 2; do
  for rep in $(seq "$reps"); do
    rm -rf "$work/lake"
    "$bin" replay "$log" --workers "$workers" --lake "$work/lake" --json > "$work/w$workers-$rep.json"
  done
done
du -sh "$work/lake" | sed 's/^/# lake size (last run): /'
python3 - "$work" "$reps" <<'PY'
import json, statistics, sys
work, reps = sys.argv[1], int(sys.argv[2])
med = {}
for w in (1, 2):
    runs = [json.load(open(f"{work}/w{w}-{r}.json")) for r in range(1, reps + 1)]
    rates = [r["events_per_second"] for r in runs]
    med[w] = statistics.median(rates)
    mid = sorted(runs, key=lambda r: r["events_per_second"])[len(runs) // 2]
    st = mid["stage_seconds"]
    print(f"workers={w}: median {med[w]:,.0f} readings/s over {reps} runs "
          f"(runs: {', '.join(f'{x:,.0f}' for x in rates)}); median run {mid['elapsed_seconds']:.1f} s, "
          f"stages (summed over workers) read+parse+validate {st['read_parse_validate']:.1f} s, "
          f"nodes {st['nodes']:.1f} s, lake {st['lake']:.1f} s; "
          f"{mid['applied']:,} states, {mid['rhythm_rows']:,} rhythm rows, "
          f"{mid['state_bytes_per_node']:,.0f} bytes of state per node")
print(f"2 workers / 1 worker: {med[2] / med[1]:.2f}x")
PY
