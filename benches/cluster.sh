#!/usr/bin/env bash
# Cluster benches (docs/BENCHMARKS.md, "Cluster on NATS JetStream"), all in one
# run on this machine, against a private nats-server (free port, file storage
# in a temporary directory):
#  1. latency the bus adds: the same load (CLIENTS clients x RATE events/s)
#     against a single process and against ingest -> NATS -> gateway;
#  2. the ingest publish ceiling into JetStream (acknowledged events/s), beside
#     the same ingest node without a bus (what the engine alone reaches);
#  3. two gateways beside one under the same total client load;
#  4. the store role draining a backlog into PostgreSQL (events/s).
# Needs a release build (make build) and nats-server; PostgreSQL on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${TICKWIRE_BIN:-${CARGO_TARGET_DIR:-target}/release/tickwire}"
CLIENTS="${CLIENTS:-1000}"
RATE="${RATE:-1000}"
DURATION="${DURATION:-10}"
RUNS="${RUNS:-3}"
OUT="${OUT:-docs/bench-cluster.jsonl}"
NATS_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_nats() {
  NATS_PORT="$(free_port)"
  rm -rf "$tmp/nats"
  "$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$tmp/nats" >/dev/null 2>&1 &
  NATS_PID=$!
  pids+=("$NATS_PID")
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && return; sleep 0.1; done
  echo "nats-server did not start"; exit 1
}

# serve NAME ARGS...: starts a node, waits for its listening line, sets ADDR and PID.
serve() {
  local log="$tmp/$1.out"; shift
  "$BIN" serve --static-dir /nonexistent --listen 127.0.0.1:0 "$@" >"$log" 2>"$log.err" &
  PID=$!
  pids+=("$PID")
  for _ in $(seq 300); do
    if grep -q "listening on" "$log" 2>/dev/null; then
      ADDR="$(head -1 "$log" | sed 's|.*://||')"
      return
    fi
    sleep 0.1
  done
  echo "node did not start: $(cat "$log.err")"; exit 1
}

# stop_nodes PID...: stops the nodes, then the bus (nodes drain to it first).
stop_nodes() {
  kill -TERM "$@" 2>/dev/null || true
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
  kill -TERM "$NATS_PID" 2>/dev/null || true
  wait "$NATS_PID" 2>/dev/null || true
}

metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1==m {print $2}' | head -1; }

SECTIONS="${SECTIONS:-1234}"
echo "== 1. latency the bus adds ($CLIENTS clients x $RATE events/s, $RUNS runs each)"
for run in $(seq "$RUNS"); do
  [[ "$SECTIONS" == *1* ]] || break
  "$BIN" bench --name single --clients "$CLIENTS" --rate "$RATE" --duration-s "$DURATION" --json-out "$OUT"
  start_nats
  serve ingest --role ingest --nats "nats://127.0.0.1:$NATS_PORT" --store none --rate "$RATE"
  INGEST_PID=$PID
  serve gateway --role gateway --nats "nats://127.0.0.1:$NATS_PORT" --store none
  "$BIN" bench --name cluster --url "ws://$ADDR/v1/ws" --server-pid "$PID" --clients "$CLIENTS" \
    --duration-s "$DURATION" --json-out "$OUT"
  stop_nodes "$PID" "$INGEST_PID"
done

if [[ "$SECTIONS" == *2* ]]; then
echo "== 2. publish ceiling (simulator offered 400,000 events/s for 10 s)"
start_nats
serve ceiling --role ingest --nats "nats://127.0.0.1:$NATS_PORT" --store none --rate 400000
sleep 2
a0="$(metric "$ADDR" tickwire_bus_acked_total)"; sleep 10; a1="$(metric "$ADDR" tickwire_bus_acked_total)"
echo "{\"name\":\"publish-ceiling\",\"acked_per_s\":$(( (${a1%.*} - ${a0%.*}) / 10 ))}" | tee -a "$OUT"
stop_nodes "$PID"
serve nobus --store none --rate 400000
sleep 2
p0="$(metric "$ADDR" tickwire_fanout_published_total)"; sleep 10; p1="$(metric "$ADDR" tickwire_fanout_published_total)"
echo "{\"name\":\"engine-without-bus\",\"published_per_s\":$(( (${p1%.*} - ${p0%.*}) / 10 ))}" | tee -a "$OUT"
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true

fi

if [[ "$SECTIONS" == *3* ]]; then
echo "== 3. one gateway against two, $CLIENTS clients in total"
start_nats
serve ingest2 --role ingest --nats "nats://127.0.0.1:$NATS_PORT" --store none --rate "$RATE"
INGEST_PID=$PID
serve g1 --role gateway --nats "nats://127.0.0.1:$NATS_PORT" --store none
G1=$ADDR; G1_PID=$PID
serve g2 --role gateway --nats "nats://127.0.0.1:$NATS_PORT" --store none
G2=$ADDR; G2_PID=$PID
"$BIN" bench --name one-gateway --url "ws://$G1/v1/ws" --server-pid "$G1_PID" --clients "$CLIENTS" \
  --duration-s "$DURATION" --json-out "$OUT"
half=$(( CLIENTS / 2 ))
"$BIN" bench --name two-gateways-a --url "ws://$G1/v1/ws" --server-pid "$G1_PID" --clients "$half" \
  --duration-s "$DURATION" --json-out "$OUT" &
b1=$!
"$BIN" bench --name two-gateways-b --url "ws://$G2/v1/ws" --server-pid "$G2_PID" --clients "$half" \
  --duration-s "$DURATION" --json-out "$OUT"
wait "$b1"
stop_nodes "$G1_PID" "$G2_PID" "$INGEST_PID"

fi

if [[ "$SECTIONS" == *4* ]]; then
echo "== 4. store role: a backlog of 20 s at 20,000 events/s drained into PostgreSQL"
db="tickwire_cluster_bench_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
start_nats
serve ingest3 --role ingest --nats "nats://127.0.0.1:$NATS_PORT" --store none --rate 20000
sleep 20
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
start=$(date +%s.%N)
serve storer --role store --nats "nats://127.0.0.1:$NATS_PORT" --store "postgres://postgres@127.0.0.1:5432/$db"
STORE=$ADDR
while :; do
  pending="$(metric "$STORE" tickwire_bus_store_consumer_pending)"
  [ -n "$pending" ] && [ "${pending%.*}" = 0 ] && break
  sleep 0.2
done
end=$(date +%s.%N)
written="$(metric "$STORE" tickwire_store_written_total)"
echo "{\"name\":\"store-role-drain\",\"events\":${written%.*},\"seconds\":$(echo "$end - $start" | bc),\"events_per_s\":$(echo "${written%.*} / ($end - $start)" | bc)}" | tee -a "$OUT"
stop_nodes "$PID"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $db" >/dev/null
fi
