#!/usr/bin/env bash
# No client can hurt another: normal clients' latency with the hostile mix
# running beside them (tickwire bench --hostile: a 10,000 messages/s flood, a
# connect-and-drop loop, 200 unfinished handshakes, a reader of everything, a
# 100,000-fragment message) against a quiet run, 30 s each, interleaved rounds,
# medians and their ratio, and the server's peak memory (docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/tickwire}
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/bench}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-100}
RATE=${RATE:-1000}
DURATION=${DURATION:-30}
mkdir -p "$OUT"
RESULTS="$OUT/hostile.jsonl"
: > "$RESULTS"
ulimit -n "$(ulimit -Hn)" || true
for round in $(seq "$ROUNDS"); do
  for mode in quiet hostile; do
    flag=$([ "$mode" = hostile ] && echo --hostile || true)
    echo "== $mode: $CLIENTS clients, $RATE events/s, $DURATION s (round $round)"
    "$BIN" bench --name "$mode" --clients "$CLIENTS" --rate "$RATE" --duration-s "$DURATION" \
      --json-out "$RESULTS" $flag | sed -n '2p;/peak RSS/p;/hostile mix/p'
  done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
def median(name, *path):
    values = [r for r in runs if r["name"] == name]
    for key in path:
        values = [v[key] for v in values]
    return statistics.median(values)
print(f"{'':18}{'quiet':>10}{'hostile':>10}{'ratio':>8}")
for label, path in [("p50 µs", ("total_us", "p50")), ("p99 µs", ("total_us", "p99")),
                    ("updates/s", ("delivered_per_s",)), ("gaps", ("gaps",)),
                    ("peak RSS MiB", ("server_peak_rss_mib",))]:
    quiet, hostile = median("quiet", *path), median("hostile", *path)
    ratio = hostile / quiet if quiet else float("nan")
    print(f"{label:18}{quiet:10.1f}{hostile:10.1f}{ratio:8.2f}")
PY
