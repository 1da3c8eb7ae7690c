#!/usr/bin/env bash
# `make cluster`: one machine, the whole cluster. Starts (or reuses) nats-server
# with JetStream on 127.0.0.1:4222, one ingest node (simulator), two gateways
# with the dashboard (http://127.0.0.1:8080 and :8081) and one store node
# (SQLite under data/cluster/); Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${TICKWIRE_BIN:-${CARGO_TARGET_DIR:-target}/release/tickwire}"
NATS_PORT="${NATS_PORT:-4222}"
NATS="nats://127.0.0.1:$NATS_PORT"
DATA="${DATA:-data/cluster}"
mkdir -p "$DATA"
pids=()
nats_pid=""
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping the cluster"
  # The nodes first (they drain to the bus), then the bus if it is ours.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$nats_pid" ]; then kill -TERM "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; fi
}
trap stop INT TERM EXIT

if (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; then
  echo "using the nats-server already on $NATS"
else
  NATS_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
  [ -x "$NATS_BIN" ] || { echo "nats-server is not installed: apt-get install nats-server"; exit 1; }
  "$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DATA/nats" &
  nats_pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done
  echo "started nats-server on $NATS (storage $DATA/nats)"
fi

common=(--nats "$NATS")
"$BIN" serve --role ingest "${common[@]}" --listen 127.0.0.1:8090 --store none & pids+=($!)
"$BIN" serve --role store "${common[@]}" --listen 127.0.0.1:8091 --store "sqlite://$DATA/history.db" & pids+=($!)
"$BIN" serve --role gateway "${common[@]}" --listen 127.0.0.1:8080 & pids+=($!)
"$BIN" serve --role gateway "${common[@]}" --listen 127.0.0.1:8081 & pids+=($!)
echo "ingest http://127.0.0.1:8090  store http://127.0.0.1:8091  gateways http://127.0.0.1:8080 http://127.0.0.1:8081 (Ctrl-C stops all)"
wait -n "${pids[@]}" || true
