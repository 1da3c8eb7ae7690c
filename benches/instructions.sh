#!/usr/bin/env bash
# CI guard: instructions per published event in the fan-out, at 1,000 and 10,000
# subscribers, counted by callgrind (repeatable to the instruction, whatever else
# the machine is doing) and compared with benches/baseline-instructions.json.
# Fails when a count is more than MAX_REGRESSION_PCT (10) above its baseline, or
# when the run publishes nothing. UPDATE_BASELINE=1 writes the baseline instead.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-target}/debug/examples/fanout_cost"
BASELINE=benches/baseline-instructions.json
MAX_REGRESSION_PCT="${MAX_REGRESSION_PCT:-10}"
EVENTS=10
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is required (apt-get install valgrind)"; exit 1; }
[ -x "$BIN" ] || { echo "instructions.sh: build it first: cargo build --examples"; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
results="{"
status=0
for subscribers in 1000 10000; do
  # Instrumentation starts off (the setup of 10,000 subscriptions is slow to
  # simulate); once the example says "ready" it is switched on, and only
  # fanout_cost::publish is counted.
  rm -f "$out/go"; mkfifo "$out/go"
  FANOUT_COST_WAIT=1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/cg.$subscribers" \
    --toggle-collect='*fanout_cost::publish*' "$BIN" "$subscribers" "$EVENTS" <"$out/go" >"$out/log.$subscribers" 2>&1 &
  pid=$!
  exec 3>"$out/go"
  for _ in $(seq 600); do grep -q '^ready' "$out/log.$subscribers" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  grep -q '^ready' "$out/log.$subscribers" || { cat "$out/log.$subscribers"; echo "fanout_cost never got ready"; exit 1; }
  callgrind_control -i on "$pid" >/dev/null 2>&1
  echo go >&3
  exec 3>&-
  wait "$pid" || { cat "$out/log.$subscribers"; exit 1; }
  total="$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out/cg.$subscribers")"
  [ -n "$total" ] && [ "$total" -gt 0 ] || { echo "no instructions counted at $subscribers subscribers"; exit 1; }
  per_event=$((total / EVENTS))
  per_subscriber=$((per_event / subscribers))
  results+="\"$subscribers\":$per_event,"
  if [ -f "$BASELINE" ] && [ "${UPDATE_BASELINE:-0}" != 1 ]; then
    base="$(python3 -c "import json,sys; print(json.load(open('$BASELINE'))['$subscribers'])")"
    limit=$((base + base * MAX_REGRESSION_PCT / 100))
    change="$(python3 -c "print(f'{($per_event - $base) / $base * 100:+.1f} %')")"
    verdict=ok
    if [ "$per_event" -gt "$limit" ]; then verdict="REGRESSION (limit $limit)"; status=1; fi
    echo "fan-out, $subscribers subscribers: $per_event instructions per event ($per_subscriber per subscriber); baseline $base ($change): $verdict"
  else
    echo "fan-out, $subscribers subscribers: $per_event instructions per event ($per_subscriber per subscriber)"
  fi
done
results="${results%,}}"
if [ "${UPDATE_BASELINE:-0}" = 1 ] || [ ! -f "$BASELINE" ]; then
  echo "$results" > "$BASELINE"
  echo "baseline written: $BASELINE"
fi
exit $status
