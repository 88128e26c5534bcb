"""`mlfn serve` as a subprocess on free loopback ports, for the tests that need a real server
process (several processes, gRPC beside tritonclient, SIGKILL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BACKEND_VARIABLES = ("MLFN_OBJECT_STORE", "MLFN_EXPERIMENT_STORE", "MLFN_JOB_QUEUE", "MLFN_API_KEY")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, *extra: str, env: dict[str, str] | None = None,
                 grpc_port: int = 0, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A server on the embedded stores in ``data_dir`` (no demo models, no EMF lines, a quick
    job poll; ``env`` adds or overrides settings), started when /health answers. Its stderr goes
    to ``log`` (shown if it dies while starting)."""
    port = free_port()
    settings = {**os.environ}
    for key in BACKEND_VARIABLES:
        settings.pop(key, None)
    settings.update({"MLFN_DATA_DIR": str(data_dir), "MLFN_DEMO_MODELS": "false",
                     "MLFN_EMF": "false", "MLFN_JOB_POLL_SECONDS": "0.2", **(env or {})})
    log = log or data_dir.parent / f"server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.local.cli", "serve", "--port", str(port),
             "--grpc-port", str(grpc_port), *extra],
            cwd=ROOT, env=settings, stdout=subprocess.DEVNULL, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise AssertionError("the server died while starting:\n"
                                 + log.read_text(errors="replace")[-3000:])
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
