"""The local server under HTTP load: `mlfn serve` (its defaults, monitoring on) against the floor
of its framework and the usual pickled-model app, all measured in ONE run, interleaved.

    .venv/bin/python bench/bench_server.py           # ~4 minutes on 2 cores (make bench-server)
    .venv/bin/python bench/bench_server.py --quick   # one round, shorter windows, ~1 minute

Three servers on loopback, each under uvicorn with uvloop and httptools, none logging requests:

- **ours**: ``mlfn serve --data-dir STORE`` with its defaults: EMF lines on stdout (sent to
  /dev/null, still written), the SQLite inference log, the API key off, the model pool sized by
  CPU count, one process.
- **floor**: ``bench/floor_app.py``, a bare FastAPI + orjson + ONNX Runtime app serving the
  service's own exported ONNX file, with the model off the event loop as ours must be.
- **baseline**: ``bench/baseline_app.py``, the pickled scikit-learn Pipeline behind FastAPI
  (``predict_proba`` on a DataFrame).

The model is the demo-sized forest (RandomForest, 100 trees, breast cancer, 30 features), the
same trained data for all three; answers are checked to agree before timing. Load comes from wrk
(Debian's package; installed with apt-get when missing and possible) with a Python keep-alive
load generator as the fallback. Measured, in alternating rounds so background load hits every
side alike: req/s at 8 connections, p50/p99 at 1 connection, the p50 of a 1000-row JSON
forward_batch, and for ours the p99 of /health while two heavy image batches (zips of large
PNGs) are in flight. Targets print PASS/MISS and never fail the run (it fails only if a server
answers wrongly).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

VENV_BIN = Path(sys.executable).parent
HEAVY_IMAGES, HEAVY_SIDE = 40, 4000  # one heavy batch: 640 Mpx to decode and resize
TARGETS = {"rps_vs_floor": 0.8, "rps_vs_baseline": 40.0, "p50_vs_floor": 1.3,
           "batch_vs_floor": 1.2, "health_p99_ms": 50.0}


# -- the store --------------------------------------------------------------------------------
def build_store(root: Path) -> dict[str, Any]:
    """The demo models (as `mlfn serve` trains them on first start) and the benchmark forest with
    its pickled twin (bench/bench_forward.py's rf100 scenario)."""
    os.environ["MLFN_DATA_DIR"] = str(root)
    os.environ["MLFN_EMF"] = "false"
    from bench.bench_forward import SCENARIOS, records_from, train
    from common import context
    from common.demo import ensure_demo_models

    context.reset()
    lifecycle = context.lifecycle()
    ensure_demo_models(lifecycle)
    scenario = next(s for s in SCENARIOS if s.key == "rf100")
    info = train(lifecycle, scenario)
    exp = lifecycle.store.get_experiment(info["experiment_id"])
    onnx_path = root / "models" / str(exp.artifact_key)
    records = records_from(info["sample"], 1000, info["features"])
    context.reset()
    return {"model": scenario.model, "onnx": onnx_path, "records": records}


def heavy_archive(images: int, side: int) -> bytes:
    """A zip of large grayscale PNGs that compress well: cheap to send (well under the body
    limit), expensive to decode and resize (``side`` x ``side`` pixels each)."""
    import numpy as np
    from PIL import Image

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for i in range(images):
            gradient = np.tile(np.linspace(0, 255, side, dtype=np.uint8), (side, 1))
            png = io.BytesIO()
            Image.fromarray(np.roll(gradient, i * 7, axis=1), mode="L").save(png, format="PNG")
            archive.writestr(f"img_{i:03d}.png", png.getvalue())
    return out.getvalue()


# -- servers ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str, argv: list[str], env: dict[str, str], stack: ExitStack) -> str:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stack.callback(stop, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{name} did not start:\n{proc.stderr.read() if proc.stderr else ''}")
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return url
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not answer /health")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def uvicorn_argv(app: str) -> list[str]:
    return [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", "{port}",
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]


# -- load -------------------------------------------------------------------------------------
def ensure_wrk() -> str | None:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install -y wrk)", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return shutil.which("wrk")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_run(wrk: str, url: str, body: bytes, connections: int, seconds: float,
            workdir: Path) -> dict[str, float]:
    """req/s and latency percentiles (ms) of POSTing ``body`` for ``seconds``."""
    body_file = workdir / f"body-{len(body)}.json"
    body_file.write_bytes(body)
    script = workdir / f"post-{len(body)}.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*a"); f:close()\n')
    threads = min(2, connections)
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([0-9.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{pct}_ms"] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx answers under load")
    return result


def python_run(url: str, body: bytes, connections: int, seconds: float) -> dict[str, float]:
    """The fallback load generator: ``connections`` keep-alive clients in threads."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine = []
        target = f"{parts.path}?{parts.query}"
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            conn.request("POST", target, body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                raise SystemExit(f"{url} answered {reply.status}")
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ordered = sorted(latencies)
    return {"rps": len(ordered) / seconds, "p50_ms": ordered[len(ordered) // 2] * 1e3,
            "p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3}


def health_under_heavy_batches(url: str, archive: bytes, seconds: float) -> dict[str, float]:
    """/health latencies (sequential GETs) while two clients keep a heavy image batch each in
    flight against the digits model."""
    stop_at = time.perf_counter() + seconds
    done: list[float] = []
    failures: list[str] = []

    def heavy() -> None:
        with requests.Session() as session:
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                reply = session.post(f"{url}/forward_batch?model=digits", data=archive,
                                     headers={"Content-Type": "application/zip"}, timeout=300)
                if reply.status_code != 200:
                    failures.append(f"{reply.status_code} {reply.text[:200]}")
                    return
                done.append(time.perf_counter() - t)

    workers = [threading.Thread(target=heavy) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(0.5)  # both batches are in the server
    samples = []
    with requests.Session() as session:
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            session.get(f"{url}/health", timeout=60).raise_for_status()
            samples.append((time.perf_counter() - t) * 1e3)
            time.sleep(0.01)
    for w in workers:
        w.join()
    if failures:
        raise SystemExit(f"heavy batch failed: {failures[0]}")
    ordered = sorted(samples)
    return {"health_p50_ms": ordered[len(ordered) // 2],
            "health_p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "health_samples": len(ordered), "heavy_batches": len(done),
            "heavy_batch_s": statistics.median(done) if done else float("nan")}


# -- checks -----------------------------------------------------------------------------------
def check_agreement(urls: dict[str, str], model: str, records: list[dict[str, Any]]) -> None:
    """Every server gives the same labels (and probabilities within 1e-4) on the same rows."""
    answers = {}
    for name, base in urls.items():
        reply = requests.post(f"{base}/forward_batch?model={model}", json={"records": records[:200]},
                              timeout=60)
        if reply.status_code != 200:
            raise SystemExit(f"{name} answered {reply.status_code}: {reply.text[:300]}")
        answers[name] = reply.json()
    ours = answers["ours"]
    for name, other in answers.items():
        if other["predictions"] != ours["predictions"]:
            raise SystemExit(f"{name} disagrees with ours on the predictions")
        worst = max(abs(a[k] - b[k]) for a, b in zip(ours["probabilities"], other["probabilities"],
                                                     strict=True) for k in a)
        if worst > 1e-4:
            raise SystemExit(f"{name} disagrees with ours on probabilities by {worst}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, shorter windows")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="length of each load window")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (3.0 if args.quick else 6.0)

    wrk = ensure_wrk()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; load: {'wrk' if wrk else 'Python clients'}",
          file=sys.stderr)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlfn-bench-server-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        store = build_store(work / "store")
        model = store["model"]
        lean = {"PYDANTIC_DISABLE_PLUGINS": "__all__"}
        urls = {
            "ours": start("ours", [str(VENV_BIN / "mlfn"), "serve", "--port", "{port}", "--grpc-port", "0",
                                   "--data-dir", str(work / "store")],
                          {**lean, "MLFN_EMF": "true"}, stack),
            "floor": start("floor", uvicorn_argv("bench.floor_app:app"),
                           {"MLFN_FLOOR_ONNX": str(store["onnx"])}, stack),
            "baseline": start("baseline", uvicorn_argv("bench.baseline_app:app"),
                              {"MLFN_DATA_DIR": str(work / "store"), "MLFN_EMF": "false"}, stack),
        }
        check_agreement(urls, model, store["records"])
        one = json.dumps(store["records"][0]).encode()
        batch = json.dumps({"records": store["records"]}).encode()

        def load(url: str, body: bytes, connections: int, window: float) -> dict[str, float]:
            if wrk:
                return wrk_run(wrk, url, body, connections, window, work)
            return python_run(url, body, connections, window)

        samples: dict[str, dict[str, list[float]]] = {n: {} for n in urls}
        for round_no in range(rounds):
            print(f"round {round_no + 1}/{rounds}", file=sys.stderr)
            for name, base in urls.items():
                forward = f"{base}/forward?model={model}"
                for key, value in (
                    ("rps8", load(forward, one, 8, seconds)["rps"]),
                    ("p50_1", load(forward, one, 1, seconds)),
                    ("batch", load(f"{base}/forward_batch?model={model}", batch, 1, seconds)),
                ):
                    if isinstance(value, dict):
                        key_values = {f"{key}_p50": value["p50_ms"], f"{key}_p99": value["p99_ms"]}
                    else:
                        key_values = {key: value}
                    for k, v in key_values.items():
                        samples[name].setdefault(k, []).append(v)
        print("heavy image batches against ours", file=sys.stderr)
        archive = heavy_archive(images=HEAVY_IMAGES, side=HEAVY_SIDE)
        health = health_under_heavy_batches(urls["ours"], archive, max(10.0, seconds * 2))

    med = {n: {k: statistics.median(v) for k, v in s.items()} for n, s in samples.items()}
    ours, floor, base = med["ours"], med["floor"], med["baseline"]
    ratios = {
        "rps_vs_floor": ours["rps8"] / floor["rps8"],
        "rps_vs_baseline": ours["rps8"] / base["rps8"],
        "p50_vs_floor": ours["p50_1_p50"] / floor["p50_1_p50"],
        "batch_vs_floor": ours["batch_p50"] / floor["batch_p50"],
    }
    rows = [
        ("req/s, 8 connections", "rps8", "{:,.0f}", f"ours/floor {ratios['rps_vs_floor']:.2f} "
         f"(>= {TARGETS['rps_vs_floor']} {verdict(ratios['rps_vs_floor'] >= TARGETS['rps_vs_floor'])}), "
         f"ours/baseline {ratios['rps_vs_baseline']:.1f}x (>= {TARGETS['rps_vs_baseline']:.0f}x "
         f"{verdict(ratios['rps_vs_baseline'] >= TARGETS['rps_vs_baseline'])})"),
        ("1 connection p50 (ms)", "p50_1_p50", "{:.3f}", f"ours/floor {ratios['p50_vs_floor']:.2f} "
         f"(<= {TARGETS['p50_vs_floor']} {verdict(ratios['p50_vs_floor'] <= TARGETS['p50_vs_floor'])})"),
        ("1 connection p99 (ms)", "p50_1_p99", "{:.3f}", ""),
        ("1000-row batch p50 (ms)", "batch_p50", "{:.2f}",
         f"ours/floor {ratios['batch_vs_floor']:.2f} (<= {TARGETS['batch_vs_floor']} "
         f"{verdict(ratios['batch_vs_floor'] <= TARGETS['batch_vs_floor'])})"),
    ]
    print(f"\nmlfn serve vs the floor (bare FastAPI + ORT) and the pickled baseline; {rounds} "
          f"round(s) of {seconds:g} s windows, medians; elapsed {time.monotonic() - started:.0f} s\n")
    print(f"{'':28} {'ours':>12} {'floor':>12} {'baseline':>12}   ")
    for label, key, fmt, note in rows:
        print(f"{label:28} {fmt.format(ours[key]):>12} {fmt.format(floor[key]):>12} "
              f"{fmt.format(base[key]):>12}   {note}")
    ok = health["health_p99_ms"] <= TARGETS["health_p99_ms"]
    print(f"{'/health p99, 2 heavy batches':28} {health['health_p99_ms']:>9.1f} ms "
          f"(p50 {health['health_p50_ms']:.1f} ms, {health['health_samples']} requests; "
          f"{health['heavy_batches']} batches of {HEAVY_IMAGES} PNGs {HEAVY_SIDE}x{HEAVY_SIDE} done, median "
          f"{health['heavy_batch_s']:.1f} s each)   <= {TARGETS['health_p99_ms']:.0f} ms {verdict(ok)}")
    if args.json:
        args.json.write_text(json.dumps({"medians": med, "ratios": ratios, "health": health,
                                         "rounds": rounds, "seconds": seconds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
