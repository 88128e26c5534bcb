"""The Open Inference Protocol side by side: the same forest served by MLServer and by `mlfn serve`,
called through the SAME tritonclient (HTTP and gRPC), measured in ONE run, in interleaved rounds.

    .venv/bin/python bench/bench_oip.py           # ~2.5 minutes on 2 cores (make bench-oip)
    .venv/bin/python bench/bench_oip.py --quick   # one round, fewer calls, ~40 s

The first run also creates MLServer's venv (pip, about a minute); later runs reuse it.

The model is the demo-sized forest (RandomForest, 100 trees, breast cancer, 30 features) that
``bench/bench_server.py: build_store`` trains through the lifecycle, with its pickled native
scikit-learn Pipeline fitted on the same rows. Two servers on loopback, each a subprocess:

- **mlserver**: MLServer 1.7 with its scikit-learn runtime (``mlserver_sklearn.SKLearnModel``)
  serving a joblib file of that fitted Pipeline, behind a step that names the columns of the
  ``[N, 30]`` tensor (the Pipeline's ColumnTransformer selects columns by name). Its own venv,
  created on the first run under ``.bench-venvs/mlserver`` (gitignored) and reused while the
  pinned requirements are the same. Settings: its default of one parallel inference worker
  process, ``debug: false`` (no access logs; ours logs none either) and the metrics server
  off (``metrics_endpoint: null``, which also drops its Prometheus middleware): MLServer at its
  lightest.
- **ours**: ``mlfn serve --data-dir STORE --port P --grpc-port G``, its defaults otherwise
  (one process, EMF lines and the SQLite inference log on, no access log).

Both get the same ``[N, 30]`` FP32 tensor (MLServer's runtime takes one array; ours takes one
``[N, n_features]`` tensor for an all-numeric model), so the client does the same work; MLServer
is asked for ``predict_proba``, ours for its ``label`` and ``probabilities``. Measured: the p50
of sequential 1-row infers over HTTP and over gRPC, req/s with 8 client threads (each with its
own client) over HTTP and over gRPC, the p50 of a 1000-row infer (HTTP with JSON tensors, HTTP
with binary tensors, gRPC), and in the same run ONNX Runtime's ``session.run`` alone on that
1000-row batch (the service's exported ONNX file, one intra-op thread, the per-feature inputs).
Before timing, both must give the same argmax labels on 200 rows, and probabilities within 1e-4.

tritonclient and our generated ``inference.*`` protobuf modules cannot live in one process
(duplicate symbol), so the store is built in a child process and this process never imports
``infra.grpc_api``. Targets print PASS/MISS and never fail the run; the exit status is 1 only
if a server answers wrongly or the two disagree.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

VENV_BIN = Path(sys.executable).parent
MLSERVER_VENV = ROOT / ".bench-venvs" / "mlserver"
# Tried in order: the release asked for, then the one before it.
MLSERVER_RELEASES = ("1.7.*", "1.6.*")
TARGETS = {"rps_vs_mlserver": 20.0, "batch_minus_ort_ms": 1.0}
# MLServer's settings.json besides host and ports: its lightest configuration.
MLSERVER_SETTINGS = {
    "parallel_workers": 1,     # its default: inference in one worker process
    "debug": False,            # no access logs (the default, true, logs every request)
    "metrics_endpoint": None,  # no metrics server and no Prometheus middleware
}
AGREEMENT_ROWS = 200
BATCH_ROWS = 1000
INPUT_NAME = "predict"  # not a feature name: ours reads a lone [N, 30] tensor as the matrix


class Disagreement(Exception):
    """A server answered wrongly, or the two disagree: the only failure of the run."""


# -- the store (child process: it imports our serving code, which must not meet tritonclient) ---
def prepare(store: Path, repo: Path) -> None:
    """Train the forest into ``store``; write MLServer's ``repo/<model>/model.joblib`` and
    ``repo/prepared.json`` (the model, its ONNX file, the columns, classes and 1000 rows)."""
    import pickle
    from functools import partial

    import joblib
    import pandas as pd
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from bench.bench_server import build_store

    info = build_store(store)
    native = pickle.loads((store / "models" / info["model"] / "native.pkl").read_bytes())
    pipeline = native["pipeline"]
    columns = [str(c) for c in pipeline.feature_names_in_]
    # MLServer decodes the [N, 30] tensor to an array and the fitted Pipeline selects its
    # columns by name: a stateless first step names them; the fitted steps are the same.
    frame = FunctionTransformer(partial(pd.DataFrame, columns=columns)).fit(
        np.zeros((1, len(columns)), dtype=np.float32))
    (repo / info["model"]).mkdir(parents=True)
    joblib.dump(Pipeline([("frame", frame), ("native", pipeline)]),
                repo / info["model"] / "model.joblib")
    (repo / "prepared.json").write_text(json.dumps({
        "model": info["model"], "onnx": str(info["onnx"]), "columns": columns,
        "classes": [str(c) for c in native["classes"]], "records": info["records"],
    }))


def build(work: Path) -> dict[str, Any]:
    """The store and MLServer's model repository, made by a child process."""
    store, repo = work / "store", work / "mlserver"
    repo.mkdir()
    subprocess.run([sys.executable, __file__, "--prepare", str(store), str(repo)], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    prepared = json.loads((repo / "prepared.json").read_text())
    (repo / "prepared.json").unlink()
    columns = prepared["columns"]
    matrix = np.array([[r[c] for c in columns] for r in prepared["records"]], dtype=np.float32)
    return {"model": prepared["model"], "store": store, "repo": repo,
            "onnx": Path(prepared["onnx"]), "columns": columns, "classes": prepared["classes"],
            "matrix": matrix}


# -- MLServer's venv ----------------------------------------------------------------------------
def installed(python: Path, *names: str) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    out = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def mlserver_venv(where: Path) -> tuple[Path, str]:
    """The venv's python (created, or reused while its pinned requirements are the same) and
    which release line it holds. scikit-learn is pinned to ours: the joblib file is a pickle.
    uvloop 0.22+ raises in ``asyncio.get_event_loop()`` outside a running loop, which MLServer
    1.7's inference worker processes call on start (they die and respawn forever)."""
    pins = [f"scikit-learn=={importlib.metadata.version('scikit-learn')}", "uvloop<0.22"]
    specs = {release: [f"mlserver=={release}", f"mlserver-sklearn=={release}", *pins]
             for release in MLSERVER_RELEASES}
    marker, python = where / "bench-requirements.txt", where / "bin" / "python"
    if marker.exists() and python.exists():
        for release, spec in specs.items():
            if marker.read_text().split() == spec:
                return python, release
    for release, spec in specs.items():
        shutil.rmtree(where, ignore_errors=True)
        print(f"creating {where} (pip install {' '.join(spec)}; about a minute)", file=sys.stderr)
        started = time.monotonic()
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(where)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", *spec],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode == 0:
            marker.write_text("\n".join(spec) + "\n")
            print(f"  installed in {time.monotonic() - started:.0f} s", file=sys.stderr)
            return python, release
        print(f"  mlserver=={release} did not install:\n{done.stderr[-2000:]}", file=sys.stderr)
    shutil.rmtree(where, ignore_errors=True)
    raise SystemExit(f"MLServer ({', '.join(MLSERVER_RELEASES)}) could not be installed")


# -- servers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def launch(name: str, argv: list[str], env: dict[str, str], cwd: Path, ready_url: str,
           log: Path, stack: ExitStack) -> int:
    """Start a server, wait until ``ready_url`` answers 200 (its stderr goes to ``log``) and
    return its pid."""
    err = stack.enter_context(log.open("w"))
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    stack.callback(stop, proc)
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{name} did not start:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as reply:
                if reply.status == 200:
                    return proc.pid
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def start_mlserver(python: Path, repo: Path, model: str, stack: ExitStack) -> Side:
    http, grpc = free_port(), free_port()
    (repo / "settings.json").write_text(json.dumps(MLSERVER_SETTINGS | {
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc}, indent=2))
    (repo / model / "model-settings.json").write_text(json.dumps({
        "name": model, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }, indent=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
    env.pop("VIRTUAL_ENV", None)
    pid = launch("mlserver", [str(python.parent / "mlserver"), "start", str(repo)], env, repo,
                 f"http://127.0.0.1:{http}/v2/models/{model}/ready", repo.parent / "mlserver.log",
                 stack)
    return Side("mlserver", model, http, grpc, pid, ["predict_proba"], "predict_proba")


def start_ours(store: Path, model: str, work: Path, stack: ExitStack) -> Side:
    http, grpc = free_port(), free_port()
    argv = [str(VENV_BIN / "mlfn"), "serve", "--port", str(http), "--grpc-port", str(grpc),
            "--data-dir", str(store)]
    pid = launch("mlfn serve", argv, dict(os.environ), ROOT,
                 f"http://127.0.0.1:{http}/v2/models/{model}/ready", work / "ours.log", stack)
    return Side("ours", model, http, grpc, pid, ["label", "probabilities"], "probabilities")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (OSError, IndexError, ValueError):
        return 0.0
    return total


# -- the calls ----------------------------------------------------------------------------------
class Side:
    """One server as tritonclient sees it: the same input tensor, its own output names."""

    def __init__(self, name: str, model: str, http_port: int, grpc_port: int, pid: int,
                 outputs: list[str], probabilities: str) -> None:
        self.name, self.model, self.pid = name, model, pid
        self.http_url, self.grpc_url = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
        self.outputs, self.probabilities = outputs, probabilities

    def http_client(self) -> Any:
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.http_url, connection_timeout=60,
                                                network_timeout=60)

    def grpc_client(self) -> Any:
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.grpc_url)

    def client(self, transport: str) -> Any:
        return self.http_client() if transport == "http" else self.grpc_client()

    def call(self, transport: str, matrix: np.ndarray) -> Callable[[Any], Any]:
        """A function of a client that sends ``matrix`` and returns the answer; the inputs are
        built once, as a caller reusing a request would. ``transport``: "http" (JSON tensors),
        "http-binary" or "grpc"."""
        if transport == "grpc":
            import tritonclient.grpc as grpcclient

            tensor = grpcclient.InferInput(INPUT_NAME, list(matrix.shape), "FP32")
            tensor.set_data_from_numpy(matrix)
            wanted = [grpcclient.InferRequestedOutput(n) for n in self.outputs]
        else:
            import tritonclient.http as httpclient

            binary = transport == "http-binary"
            tensor = httpclient.InferInput(INPUT_NAME, list(matrix.shape), "FP32")
            tensor.set_data_from_numpy(matrix, binary_data=binary)
            wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in self.outputs]
        return lambda client: client.infer(self.model, [tensor], outputs=wanted)


def check_answers(sides: dict[str, Side], matrix: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Both servers, over each transport they take, give the same argmax labels as MLServer
    over gRPC and probabilities within 1e-4 of it on the same rows; ours' labels are its classes
    at that argmax. Raises Disagreement."""
    probs: dict[str, np.ndarray] = {}
    notes, datatypes = {}, {}
    for side in sides.values():
        for transport in ("http", "http-binary", "grpc"):
            key = f"{side.name} {transport}"
            client = side.client("grpc" if transport == "grpc" else "http")
            try:
                answer = side.call(transport, matrix)(client)
            except Exception as exc:  # tritonclient raises InferenceServerException
                if side.name == "mlserver" and transport == "http-binary":
                    # MLServer's REST side has no binary tensor extension: expected, recorded.
                    notes[key] = f"refused: {' '.join(str(exc).split())[:300]}"
                    continue
                raise Disagreement(f"{key}: {exc}") from exc
            finally:
                client.close()
            p = answer.as_numpy(side.probabilities)
            if p is None or p.shape != (len(matrix), len(classes)):
                raise Disagreement(f"{key}: {side.probabilities} has shape "
                                   f"{None if p is None else p.shape}, not {(len(matrix), len(classes))}")
            probs[key] = p.astype(np.float64)
            output = answer.get_output(side.probabilities)
            datatypes[key] = output["datatype"] if isinstance(output, dict) else output.datatype
            if side.name == "ours":
                labels = [v.decode() if isinstance(v, bytes) else str(v)
                          for v in answer.as_numpy("label").reshape(-1)]
                if labels != [classes[i] for i in np.argmax(p, axis=1)]:
                    raise Disagreement(f"{key}: the labels are not the most probable classes")
    reference = probs["mlserver grpc"]
    worst = 0.0
    for key, p in probs.items():
        if (np.argmax(p, axis=1) != np.argmax(reference, axis=1)).any():
            raise Disagreement(f"{key} and mlserver grpc disagree on the argmax labels")
        worst = max(worst, float(np.abs(p - reference).max()))
    if worst > 1e-4:
        raise Disagreement(f"the probabilities differ by {worst:.2e} (> 1e-4)")
    return {"rows": len(matrix), "max_probability_difference": worst, "compared": sorted(probs),
            "probability_datatypes": datatypes, "notes": notes}


def check_feature_order(ours: Side, columns: list[str]) -> None:
    """Ours reads an [N, 30] tensor in its metadata's input order: the Pipeline's order."""
    client = ours.http_client()
    try:
        names = [i["name"] for i in client.get_model_metadata(ours.model)["inputs"]]
    finally:
        client.close()
    if names != columns:
        raise Disagreement(f"our metadata's feature order {names} is not the Pipeline's {columns}")


def timed(client: Any, call: Callable[[Any], Any], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call(client)
        times.append(time.perf_counter() - t)
    return times


def timed_with_cpu(side: Side, client: Any, call: Callable[[Any], Any], n: int,
                   into: dict[str, list[float]], key: str) -> None:
    """``n`` sequential calls: their latencies under ``key``; the CPU seconds of this process
    (the client) and of the server, and ``n``, under ``key_client_cpu`` / ``key_server_cpu``
    (summed over all blocks later: /proc counts in 10 ms ticks)."""
    client_cpu, server_cpu = time.process_time(), cpu_seconds(side.pid)
    into.setdefault(key, []).extend(timed(client, call, n))
    into.setdefault(f"{key}_client_cpu", []).extend((time.process_time() - client_cpu, n))
    into.setdefault(f"{key}_server_cpu", []).extend((cpu_seconds(side.pid) - server_cpu, n))


def throughput(side: Side, transport: str, matrix: np.ndarray, threads: int,
               seconds: float) -> dict[str, float]:
    """req/s of ``threads`` threads calling back to back, each with its own client, made in
    that thread (tritonclient's HTTP client is gevent-based: usable only in the thread that
    made it); and the CPU cores the client process and the server used meanwhile."""
    call = side.call(transport, matrix)
    counts = [0] * threads
    errors: list[str] = []
    ready = threading.Barrier(threads + 1)
    stop_at = [time.perf_counter() + 3600]

    def run(i: int) -> None:
        client = side.client(transport)
        try:
            call(client)  # connected
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(str(exc))
        ready.wait()
        n = 0
        try:
            while not errors and time.perf_counter() < stop_at[0]:
                call(client)
                n += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(str(exc))
        finally:
            client.close()
        counts[i] = n

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    began, client_cpu, server_cpu = time.perf_counter(), time.process_time(), cpu_seconds(side.pid)
    stop_at[0] = began + seconds
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise Disagreement(f"{side.name} {transport} under load: {errors[0]}")
    return {"rps": sum(counts) / elapsed,
            "client_cores": (time.process_time() - client_cpu) / elapsed,
            "server_cores": (cpu_seconds(side.pid) - server_cpu) / elapsed}


class OrtBatch:
    """``session.run`` alone on the batch, fed as the model's per-feature ``[N, 1]`` inputs
    (built once, outside the timing), with one intra-op thread."""

    def __init__(self, onnx_path: Path, columns: list[str], matrix: np.ndarray) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options,
                                            providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(columns):
            raise Disagreement(f"the ONNX inputs {names} are not the columns {columns}")
        self.feeds = {c: np.ascontiguousarray(matrix[:, [j]]) for j, c in enumerate(columns)}

    def timed(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            self.session.run(None, self.feeds)
            times.append(time.perf_counter() - t)
        return times


# -- the run ------------------------------------------------------------------------------------
BLOCK = 10  # ours' binary batch and ONNX Runtime alone alternate in blocks of this many calls


def measure(sides: dict[str, Side], store: dict[str, Any], plan: dict[str, Any]
            ) -> dict[str, Any]:
    """Every measurement in every round, for both sides in turn (the side that goes first
    alternates). Latencies are pooled over the rounds; req/s is one value per round."""
    matrix = store["matrix"]
    batch = matrix[:BATCH_ROWS]
    ort_batch = OrtBatch(store["onnx"], store["columns"], batch)
    rounds = plan["rounds"]

    def share(total: int, round_no: int, least: int = 1) -> int:
        """This round's part of ``total`` calls (the parts add up to it)."""
        return max(least, total // rounds + (round_no < total % rounds))

    latencies: dict[str, dict[str, list[float]]] = {n: {} for n in (*sides, "ort")}
    loads: dict[str, dict[str, list[dict[str, float]]]] = {n: {} for n in sides}
    order = list(sides.values())
    for round_no in range(rounds):
        print(f"round {round_no + 1}/{rounds}", file=sys.stderr)
        for side in order if round_no % 2 == 0 else order[::-1]:
            for transport in ("http", "grpc"):
                # One transport's client open at a time: the client CPU counted per call is then
                # that transport's alone (an idle gRPC channel keeps threads of its own).
                client = side.client(transport)
                for key, rows in ((f"{transport}_1", 1),
                                  (f"{transport}_1000{'_json' if transport == 'http' else ''}",
                                   BATCH_ROWS)):
                    call = side.call(transport, matrix[:rows])
                    n = share(plan["calls"] if rows == 1 else plan["batch_calls"], round_no)
                    timed(client, call, max(50, n // 10) if rows == 1 else 5)  # warm-up
                    timed_with_cpu(side, client, call, n, latencies[side.name], key)
                if side.name == "ours" and transport == "http":
                    call = side.call("http-binary", batch)
                    timed(client, call, 5)
                    ort_batch.timed(5)
                    for _ in range(share(plan["batch_calls"], round_no, BLOCK) // BLOCK):
                        timed_with_cpu(side, client, call, BLOCK, latencies["ours"],
                                       "http_1000_binary")
                        latencies["ort"].setdefault("ort_1000", []).extend(ort_batch.timed(BLOCK))
                client.close()
            for transport in ("http", "grpc"):
                loads[side.name].setdefault(f"{transport}_rps", []).append(
                    throughput(side, transport, matrix[:1], plan["clients"], plan["seconds"]))
    return {"latencies": latencies, "loads": loads}


def summarise(raw: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, keys in raw["latencies"].items():
        for key, values in keys.items():
            if key.endswith("_cpu"):  # (CPU seconds, calls) of each block
                out.setdefault(name, {})[f"{key}_ms"] = sum(values[::2]) / sum(values[1::2]) * 1e3
                continue
            ordered = sorted(values)
            out.setdefault(name, {})[f"{key}_p50"] = statistics.median(ordered) * 1e3
            out[name][f"{key}_p99"] = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3
            out[name][f"{key}_n"] = len(ordered)
    for name, keys in raw["loads"].items():
        for key, windows in keys.items():
            for field in ("rps", "client_cores", "server_cores"):
                suffix = "" if field == "rps" else f"_{field}"
                out[name][f"{key}{suffix}"] = statistics.median(w[field] for w in windows)
    return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


ROWS = [  # label, key, format
    ("1-row infer p50, HTTP (JSON tensors)", "http_1_p50", "{:.3f} ms"),
    ("1-row infer p50, gRPC", "grpc_1_p50", "{:.3f} ms"),
    ("req/s, 8 client threads, HTTP", "http_rps", "{:,.0f}"),
    ("req/s, 8 client threads, gRPC", "grpc_rps", "{:,.0f}"),
    ("1000-row infer p50, HTTP JSON", "http_1000_json_p50", "{:.2f} ms"),
    ("1000-row infer p50, HTTP binary", "http_1000_binary_p50", "{:.2f} ms"),
    ("1000-row infer p50, gRPC", "grpc_1000_p50", "{:.2f} ms"),
]


def report(med: dict[str, dict[str, float]]) -> tuple[list[str], dict[str, float]]:
    """The Markdown table and the two ratios the targets are about."""
    ours, theirs, ort_ms = med["ours"], med["mlserver"], med["ort"]["ort_1000_p50"]
    ratio = ours["http_rps"] / theirs["http_rps"]
    gap = ours["http_1000_binary_p50"] - ort_ms

    def cores(key: str) -> str:
        return (f"CPU cores used: client {theirs[key + '_client_cores']:.2f} / "
                f"{ours[key + '_client_cores']:.2f}, server {theirs[key + '_server_cores']:.2f} / "
                f"{ours[key + '_server_cores']:.2f}")

    rps_target, gap_target = TARGETS["rps_vs_mlserver"], TARGETS["batch_minus_ort_ms"]
    def cpu(key: str) -> str:
        pair = [f"{side.get(f'{key}_client_cpu_ms', 0):.2f}" if f"{key}_client_cpu_ms" in side
                else "-" for side in (theirs, ours)]
        server = [f"{side.get(f'{key}_server_cpu_ms', 0):.2f}" if f"{key}_server_cpu_ms" in side
                  else "-" for side in (theirs, ours)]
        return f"CPU ms per call: client {' / '.join(pair)}, server {' / '.join(server)}"

    notes = {
        "http_1_p50": cpu("http_1"), "grpc_1_p50": cpu("grpc_1"),
        "http_1000_json_p50": cpu("http_1000_json"), "grpc_1000_p50": cpu("grpc_1000"),
        "http_rps": f"**>= {rps_target:.0f}x {verdict(ratio >= rps_target)}**; " + cores("http_rps"),
        "grpc_rps": cores("grpc_rps"),
        "http_1000_binary_p50": f"ours - ORT = {gap:+.2f} ms, **<= {gap_target:g} ms "
                                f"{verdict(gap <= gap_target)}**; " + cpu("http_1000_binary")
                                + "; MLServer's REST has no binary tensors",
    }
    lines = ["| bc100, 100 trees | MLServer | ours | ours faster by | notes |",
             "|---|---:|---:|---:|---|"]
    for label, key, fmt in ROWS:
        mine, other = ours.get(key), theirs.get(key)
        factor = ""
        if mine and other:
            factor = f"{mine / other:.1f}x" if key.endswith("rps") else f"{other / mine:.1f}x"
        lines.append(f"| {label} | {fmt.format(other) if other else 'n/a'} | "
                     f"{fmt.format(mine) if mine else 'n/a'} | {factor} | {notes.get(key, '')} |")
    lines.append(f"| ONNX Runtime `session.run` alone, 1000 rows | | {ort_ms:.2f} ms | | "
                 "1 intra-op thread, per-feature inputs, in the bench process |")
    return lines, {"rps_vs_mlserver": ratio, "batch_minus_ort_ms": gap}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, load {load}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer calls")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--calls", type=int,
                        help="timed sequential 1-row calls per side and transport, over all rounds")
    parser.add_argument("--seconds", type=float, help="length of each req/s window")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--venv", type=Path, default=MLSERVER_VENV,
                        help="MLServer's venv (created when missing; default .bench-venvs/mlserver)")
    parser.add_argument("--prepare", nargs=2, type=Path, metavar=("STORE", "OUT"),
                        help=argparse.SUPPRESS)  # the child process that builds the store
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(*args.prepare)
        return 0
    plan = {"rounds": args.rounds or (1 if args.quick else 3),
            "calls": args.calls or (500 if args.quick else 2000),
            "batch_calls": 30 if args.quick else 150,
            "seconds": args.seconds or (3.0 if args.quick else 6.0), "clients": 8}

    started = time.monotonic()
    python, release = mlserver_venv(args.venv)
    theirs = installed(python, "mlserver", "mlserver-sklearn", "scikit-learn", "uvloop")
    import onnxruntime
    import tritonclient.grpc  # noqa: F401 - registers the inference.* protobuf symbols
    import tritonclient.http  # noqa: F401

    assert "infra.grpc_api" not in sys.modules, "our gRPC modules cannot live beside tritonclient"
    versions = {"mlserver": theirs["mlserver"], "mlserver-sklearn": theirs["mlserver-sklearn"],
                "tritonclient": importlib.metadata.version("tritonclient"),
                "onnxruntime": onnxruntime.__version__, "scikit-learn": theirs["scikit-learn"],
                "numpy": np.__version__, "mlserver's uvloop": theirs["uvloop"]}
    info = machine()
    print(f"machine: {info}", file=sys.stderr)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), file=sys.stderr)
    if not release.startswith("1.7"):
        print(f"note: MLServer {versions['mlserver']} installed: 1.7 could not be", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="mlfn-bench-oip-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        print("training the forest; writing MLServer's model file", file=sys.stderr)
        store = build(work)
        model = store["model"]
        sides = {"mlserver": start_mlserver(python, store["repo"], model, stack),
                 "ours": start_ours(store["store"], model, work, stack)}
        try:
            check_feature_order(sides["ours"], store["columns"])
            agreement = check_answers(sides, store["matrix"][:AGREEMENT_ROWS], store["classes"])
            for key, note in agreement["notes"].items():
                print(f"{key}: {note}", file=sys.stderr)
            print("probabilities as " + ", ".join(
                f"{k} {v}" for k, v in agreement["probability_datatypes"].items()), file=sys.stderr)
            raw = measure(sides, store, plan)
        except Disagreement as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
    med = summarise(raw)
    lines, ratios = report(med)
    elapsed = time.monotonic() - started
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nMLServer {versions['mlserver']} (mlserver_sklearn.SKLearnModel, "
          f"{MLSERVER_SETTINGS['parallel_workers']} parallel worker, no metrics, no access log) vs "
          f"mlfn serve (defaults), both through tritonclient {versions['tritonclient']}; "
          f"{plan['rounds']} interleaved round(s): {med['ours']['http_1_n']} sequential 1-row and "
          f"{med['ours']['http_1000_json_n']} 1000-row calls per side and transport, "
          f"{plan['clients']} threads x {plan['seconds']:g} s req/s windows (medians of rounds); "
          f"answers agreed on {agreement['rows']} rows (max |dp| "
          f"{agreement['max_probability_difference']:.1e}); {elapsed:.0f} s, load at the end "
          f"{load}\n")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": info, "versions": versions, "mlserver_settings": MLSERVER_SETTINGS,
            "plan": plan, "agreement": agreement, "results": med, "ratios": ratios,
            "targets": TARGETS, "elapsed_s": round(elapsed, 1),
            "windows": raw["loads"],
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
