#!/usr/bin/env bash
# `make test` needs these on the machine; .ci/run installs them on a fresh one.
# Checked before anything is built, so that a missing one stops the run at once
# with the exact command that installs it (Debian packages).
set -uo pipefail
missing=()
need() { # need COMMAND PACKAGE [PATH…]: ok if the command or one of the paths exists
  local cmd="$1" pkg="$2"; shift 2
  command -v "$cmd" >/dev/null 2>&1 && return
  for path in "$@"; do [ -x "$path" ] && return; done
  missing+=("$pkg")
}
need cargo "(Rust: https://rustup.rs)"
need python3 python3
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
need npm "nodejs npm"
need chromium chromium /usr/bin/chromium
need valgrind valgrind
need pg_isready "postgresql postgresql-client"
need nats-server nats-server /usr/sbin/nats-server
need promtool prometheus
if [ "${#missing[@]}" -gt 0 ]; then
  echo "make test needs: ${missing[*]}"
  pkgs=$(printf '%s ' "${missing[@]}" | sed 's/(Rust[^)]*)//')
  [ -n "${pkgs// /}" ] && echo "install with: sudo apt-get update && sudo apt-get install -y $pkgs"
  echo "(.ci/run does all of this, and starts PostgreSQL, on a fresh Debian machine)"
  exit 1
fi
