#!/usr/bin/env bash
# Authentication and entitlements cost nothing per update: the load bench at
# 1,000 clients x 1,000 events/s with API keys and entitlements on (--keys)
# against off (--sqlite-store: the same store, no keys), interleaved rounds in
# one run, medians and their ratio (docs/BENCHMARKS.md, "Keys on and off").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/tickwire}
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/bench}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-1000}
RATE=${RATE:-1000}
mkdir -p "$OUT"
RESULTS="$OUT/keys.jsonl"
: > "$RESULTS"
ulimit -n "$(ulimit -Hn)" || true
for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    flag=$([ "$mode" = on ] && echo --keys || echo --sqlite-store)
    echo "== keys $mode: $CLIENTS clients, $RATE events/s (round $round)"
    "$BIN" bench --name "keys-$mode" --clients "$CLIENTS" --rate "$RATE" --duration-s "${DURATION:-5}" \
      --check-complete --json-out "$RESULTS" "$flag" | sed -n '2p'
  done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
def median(name, path):
    values = [r for r in runs if r["name"] == name]
    for key in path:
        values = [v[key] for v in values]
    return statistics.median(values)
print(f"{'':14}{'keys off':>12}{'keys on':>12}{'on/off':>9}")
for label, path in [("p50 µs", ("total_us", "p50")), ("p99 µs", ("total_us", "p99")),
                    ("updates/s", ("delivered_per_s",)), ("server cpu %", ("server_cpu_pct",))]:
    off, on = median("keys-off", path), median("keys-on", path)
    print(f"{label:14}{off:12.1f}{on:12.1f}{on / off:9.2f}")
PY
