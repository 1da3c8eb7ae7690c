"""Test helpers: the real tickwire server on an ephemeral port.

The binary comes from $TICKWIRE_BIN (default: ../../target/debug/tickwire relative
to clients/python). It prints ``tickwire listening on http://127.0.0.1:PORT`` as
its first stdout line.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CLIENT_DIR))

SYMBOLS = ["BTC-USD", "ETH-USD", "AAPL"]
LISTENING = re.compile(r"tickwire listening on http://(\S+)")


def tickwire_bin() -> Path:
    value = os.environ.get("TICKWIRE_BIN")
    if value:
        return Path(value).expanduser().resolve()
    return (CLIENT_DIR / "../../target/debug/tickwire").resolve()


@dataclass
class Server:
    process: subprocess.Popen
    addr: str
    log_path: str
    #: Temporary directory of the server's SQLite store, if it keeps history.
    store_dir: str | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.addr}/v1/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.addr}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "".join(Path(self.log_path).read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""


def start_server(
    *extra: str,
    rate: int = 2000,
    store: bool = False,
    store_dir: str | None = None,
    listen: str = "127.0.0.1:0",
) -> Server:
    """Starts the binary on an ephemeral port (or ``listen``). ``store=True``
    keeps history in a SQLite file of a fresh temporary directory (journal in
    it too), so parallel servers never share one; ``store_dir=`` reuses the
    directory of a stopped server (a restart); otherwise ``--store none``."""
    binary = tickwire_bin()
    if not binary.exists():
        pytest.fail(f"tickwire binary not found at {binary}: build it (cargo build) or set TICKWIRE_BIN")
    out = tempfile.NamedTemporaryFile(prefix="tickwire-stdout-", suffix=".log", delete=False)
    err = tempfile.NamedTemporaryFile(prefix="tickwire-stderr-", suffix=".log", delete=False)
    if store and store_dir is None:
        store_dir = tempfile.mkdtemp(prefix="tickwire-store-")
    store_url = f"sqlite://{store_dir}/tickwire.db" if store_dir else "none"
    journal = ["--journal-dir", f"{store_dir}/journal"] if store_dir else []
    args = [
        str(binary), "serve",
        "--listen", listen,
        "--static-dir", "/nonexistent",
        "--rate", str(rate),
        "--symbols", ",".join(SYMBOLS),
        "--store", store_url,
        *journal,
        *extra,
    ]
    process = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = Path(out.name).read_text(errors="replace")
        if "\n" in text:
            first = text.splitlines()[0]
            m = LISTENING.match(first)
            if not m:
                process.kill()
                pytest.fail(f"unexpected first stdout line from {binary}: {first!r}")
            return Server(process, m.group(1), err.name, store_dir)
        if process.poll() is not None:
            pytest.fail(f"{binary} exited with {process.returncode}: {Path(err.name).read_text(errors='replace')}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"{binary} printed no listening line within 30 s")


def stop_server(server: Server, keep_store: bool = False) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    if server.store_dir and not keep_store:
        shutil.rmtree(server.store_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    srv = start_server()
    yield srv
    stop_server(srv)
