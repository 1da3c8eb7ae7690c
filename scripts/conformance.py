#!/usr/bin/env python3
"""`make conformance`: the Autobahn|Testsuite fuzzing-client cases against
Tickwire's own WebSocket stack (docs/CONFORMANCE.md).

Starts `tickwire serve --conformance-echo` on a free port, runs every case but
permessage-deflate (12.*, 13.*) with kosoku against its echo route `/v1/echo`,
prints the count of each outcome and every case that did not pass, writes
kosoku's reports (HTML and JSON per case, index.json), stops the server
whatever happened, and exits non-zero when a case failed that EXPLAINED does
not explain, when no case ran, or when the server did not live through the run.

Run it with the Python that has kosoku (clients/python/.venv, made by
`make -C clients/python conformance-deps`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

import kosoku

# kosoku 0.1.0 is pinned (clients/python/requirements-conformance.txt); its CLI
# writes the reports with this function, and so does this script.
from kosoku._report import write_reports

# permessage-deflate: the server does not negotiate it (docs/CONFORMANCE.md).
EXCLUDED = ["12.*", "13.*"]

# Cases allowed to fail, each with the reason (docs/CONFORMANCE.md says more).
# None today: a case that fails is a bug to fix, or a reason to write here.
EXPLAINED: dict[str, str] = {}

# What the echo server needs beyond its defaults, and why.
SERVER_FLAGS = [
    # 9.1.6 and 9.2.6 send 16 MiB messages (the default cap is 1 MiB: 1009).
    "--max-message-bytes", str(16 << 20),
    # 9.3.1 and 9.4.1 send 4 MiB in 64-byte fragments: 65,536 frames (default 1,024: 1009).
    "--max-message-fragments", "65536",
    # 9.7.* and 9.8.* send 1,000 messages as fast as they are echoed (default 100/s: rate_limited).
    "--max-client-messages-per-s", "100000",
    # The suite records every ping it receives as an event of the case: no
    # heartbeat ping (nor idle close) may come during one.
    "--ping-interval-ms", "3600000",
    "--idle-timeout-ms", "7200000",
    # A quiet market: the cores are for the suite.
    "--symbols", "BTC-USD", "--rate", "10",
]

LISTENING = re.compile(r"tickwire listening on http://(\S+)")


def start_server(tickwire: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    """Starts the echo server; returns it and the address it printed."""
    command = [tickwire, "serve", "--conformance-echo", "--listen", "127.0.0.1:0", "--store", "none", *SERVER_FLAGS]
    with open(log, "w") as stderr:
        env = {**os.environ, "NO_COLOR": "1"}  # a log file, not a terminal
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    found: list[str] = []

    def read_stdout() -> None:
        # Reads the whole of stdout, so that the server never blocks on it.
        assert server.stdout is not None
        for line in server.stdout:
            if not found and (match := LISTENING.search(line)):
                found.append(match.group(1))

    threading.Thread(target=read_stdout, daemon=True).start()
    deadline = time.monotonic() + 60
    while not found:
        if server.poll() is not None:
            raise RuntimeError(f"tickwire exited with {server.returncode} before listening (see {log})")
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"tickwire did not say where it listens within 60 s (see {log})")
        time.sleep(0.05)
    return server, found[0]


def stop_server(server: subprocess.Popen[str]) -> int:
    """SIGTERM (the server closes its sessions and exits 0), SIGKILL after 15 s."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return server.returncode


async def run_cases(url: str, parallelism: int, timeout_s: float) -> list[kosoku._kosoku.CaseResult]:
    try:
        return await asyncio.wait_for(
            kosoku.run_fuzzingclient(url, None, EXCLUDED, concurrency=parallelism), timeout=timeout_s
        )
    except kosoku.FailureError as failure:
        return failure.results  # every case's result, the failed ones among them


def counts(verdicts: Iterable[str]) -> str:
    """`296 OK, 2 NON-STRICT, …`, best verdicts first."""
    order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]
    counted = collections.Counter(verdicts)
    ranked = sorted(counted, key=lambda v: order.index(v) if v in order else len(order))
    return ", ".join(f"{counted[v]} {v}" for v in ranked)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--tickwire", default=f"{target}/debug/tickwire", help="the server binary")
    parser.add_argument("--outdir", default=f"{target}/conformance", help="where kosoku's reports go")
    parser.add_argument("-p", "--parallelism", type=int, default=2, help="cases run at once")
    parser.add_argument("--timeout-s", type=float, default=600, help="the whole run's limit")
    args = parser.parse_args()

    outdir = Path(args.outdir)
    # Reports are named after the server's address: start afresh each run.
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    log = outdir / "server.log"
    # Ctrl-C and SIGTERM end the run through `finally`, which stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server, addr = start_server(args.tickwire, log)
    url = f"ws://{addr}/v1/echo"
    started = time.monotonic()
    problems = []
    results = []
    try:
        print(
            f"conformance: kosoku {version('kosoku')} against {url}, "
            f"every case but {', '.join(EXCLUDED)}, {args.parallelism} at a time",
            flush=True,
        )
        results = asyncio.run(run_cases(url, args.parallelism, args.timeout_s))
    except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
        problems.append(f"the run took longer than {args.timeout_s:.0f} s")
    finally:
        alive = server.poll() is None
        code = stop_server(server)
    took = time.monotonic() - started

    if results:
        write_reports(results, str(outdir))
    print(f"{len(results)} cases in {took:.0f} s")
    print(f"  behavior: {counts(r.behavior.value for r in results)}")
    print(f"  closing:  {counts(r.behavior_close.value for r in results)}")

    failed, explained = [], []
    for r in results:
        if r.behavior.value != "OK" or r.behavior_close.value != "OK":
            line = f"  {r.case_id}: {r.behavior.value} / {r.behavior_close.value}: {r.result} {r.result_close}"
            if not r.passed and r.case_id in EXPLAINED:
                line += f" (explained: {EXPLAINED[r.case_id]})"
                explained.append(r)
            elif not r.passed:
                failed.append(r)
            print(line)
    print(f"reports in {outdir}/ (index.json; server log {log})")

    if not results:
        problems.append("no case ran")
    if not alive:
        problems.append(f"the server died during the run (exit {code}; see {log})")
    elif code != 0:
        problems.append(f"the server exited {code} when stopped (see {log})")
    if failed:
        problems.append(f"{len(failed)} cases failed: {', '.join(r.case_id for r in failed)}")
    for problem in problems:
        print(f"conformance: {problem}", file=sys.stderr)
    if explained:
        print(f"conformance: {len(explained)} failed as docs/CONFORMANCE.md explains")
    print(f"conformance: {sum(r.passed for r in results)} passed, {len(failed)} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
