"""Forward latency, batch throughput and cold start: ONNX handlers against a pickled native model.

Everything is measured in ONE run, on the SAME trained data, against a baseline measured in the
same run (see ``bench/README.md`` for the scenarios and the results table)::

    .venv/bin/python bench/bench_forward.py            # everything, ~2 minutes on 2 cores
    .venv/bin/python bench/bench_forward.py --quick    # fewer calls and runs, no CatBoost/10 MB
    .venv/bin/python bench/bench_forward.py --profile  # + cProfile of our warm forward path

Ours: ``functions.forward.handler.handler`` / ``functions.forward_batch.handler.handler`` (the
Lambda entry points: API Gateway events answered without a web framework, ONNX Runtime) invoked
with real API Gateway v1 and v2 events, and for comparison ``bench/ours_fastapi.py``, the same
route through the FastAPI adapter and Mangum. Baseline: ``bench/baseline_app.py``, FastAPI + Mangum serving
``pickle.load``-ed scikit-learn/CatBoost Pipelines through
``predict_proba(pd.DataFrame([record]))``.

Timing targets print PASS/MISS; the exit status is non-zero only if something is broken
(a handler answers non-200, or ours and the baseline disagree).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from infra.local.cli import lambda_context  # noqa: E402
from tests.apigw import v1_event, v2_event  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
SEED = 42

# Targets stated in the issue.
FORWARD_P50_TARGET_US = 300.0
SPEEDUP_TARGET = 20.0
COLD_START_TARGET_MS = 300.0
COLD_START_MAX_MODEL_MB = 10.0

# The Lambda configuration (template.yaml): on AWS the experiment store is DynamoDB, which keeps
# no inference_log table; EMF metrics and the JSON log line stay on (stdout -> CloudWatch);
# pydantic's plugin discovery (an entry-point scan of every installed package) is off.
LAMBDA_ENV = {"MLFN_DEPLOY_CHECK_SECONDS": "1", "MLFN_INFERENCE_LOG": "off",
              "PYDANTIC_DISABLE_PLUGINS": "__all__"}
# What the monitoring costs on the warm path: ours again with these settings changed.
VARIANTS = {
    "monitoring_off": ({"MLFN_EMF": "false"}, "MLFN_EMF=false"),
    "sqlite_log": ({"MLFN_INFERENCE_LOG": "auto"}, "+SQLite inference_log"),
}

# Modules that must never be imported on the serving path.
HEAVY_MODULES = ("sklearn", "pandas", "scipy", "catboost", "skl2onnx", "onnx", "pyarrow", "fastapi",
                 "starlette", "mangum")


# -- data ------------------------------------------------------------------------------------
def breast_cancer() -> Any:
    from common.demo import breast_cancer as load

    return load()


def diabetes() -> Any:
    from common.demo import diabetes as load

    return load()


def synthetic_large() -> Any:
    """30 numeric features, 10 000 noisy rows: fully grown trees, so the forest is ~10 MB."""
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=10_000, n_features=30, n_informative=12, flip_y=0.05,
                               random_state=SEED)
    frame = pd.DataFrame(X, columns=[f"f{i:02d}" for i in range(30)])
    frame["label"] = ["pos" if v else "neg" for v in y]
    return frame


@dataclass
class Scenario:
    key: str
    model: str
    task: str
    target: str
    model_class: str
    hyperparameters: dict[str, Any]
    load: Callable[[], Any]
    description: str
    checks_targets: bool = False
    latency: bool = True
    batch: bool = True
    v2: bool = False
    info: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario("rf100", "bc100", "classification", "diagnosis", "random_forest",
             {"n_estimators": 100}, breast_cancer,
             "RandomForest, 100 trees, breast cancer (30 numeric features, 569 rows)",
             checks_targets=True, v2=True),
    Scenario("catboost", "diabetes-cb", "regression", "progression", "catboost",
             {"iterations": 200, "depth": 4}, diabetes,
             "CatBoost regressor, 200 trees of depth 4, diabetes (9 numeric + 1 categorical)"),
    Scenario("rf10mb", "rf-10mb", "classification", "label", "random_forest",
             {"n_estimators": 150}, synthetic_large,
             "RandomForest, 150 fully grown trees, synthetic 10 000 x 30: the ~10 MB cold start",
             batch=False),
]


# -- store -----------------------------------------------------------------------------------
def train(lifecycle: Any, scenario: Scenario) -> dict[str, Any]:
    """Train and deploy the ONNX model through the lifecycle, then fit the native baseline on
    exactly the rows and hyperparameters the lifecycle trained on, and pickle it beside it."""
    import pickle

    from bench.baseline_app import native_key
    from common.catalog import model_class
    from common.domain import Task
    from common.training.datasets import load_dataset
    from common.training.estimators import build_pipeline
    from common.training.frames import encode_target, feature_frame
    from common.training.trainer import split_indices

    frame = scenario.load()
    lifecycle.create_model({"name": scenario.model, "task": scenario.task, "target": scenario.target})
    lifecycle.add_frame(scenario.model, frame)
    started = time.perf_counter()
    done = lifecycle.train_now(scenario.model, {"model_class": scenario.model_class, "deploy": "always",
                                                "hyperparameters": scenario.hyperparameters})
    if done.status.value != "succeeded":
        raise SystemExit(f"training {scenario.model} failed: {done.error}")

    train_seconds = time.perf_counter() - started

    # The same split, typing and estimator as common.training.trainer.train.
    record = lifecycle.store.get_model(scenario.model)
    task = Task(scenario.task)
    stored = load_dataset(lifecycle.backends.datasets, lifecycle.store, record, done.dataset_version)
    params = model_class(scenario.model_class).resolve(task, scenario.hyperparameters)
    X = feature_frame(stored, record.features)
    y, classes = encode_target(stored[scenario.target], task)
    train_idx, _, _ = split_indices(y, task, SEED)
    pipeline = build_pipeline(scenario.model_class, task, record.features, params, SEED)
    pipeline.fit(X.iloc[train_idx], y[train_idx])
    native = pickle.dumps({"pipeline": pipeline, "task": scenario.task, "classes": classes})
    lifecycle.backends.models.put(native_key(scenario.model), native)

    onnx_bytes = lifecycle.backends.models.get(done.artifact_key)
    return {
        "experiment_id": done.id,
        "onnx_bytes": len(onnx_bytes),
        "pickle_bytes": len(native),
        "onnx_trees": count_onnx_trees(onnx_bytes),
        "native_trees": count_native_trees(pipeline),
        "hyperparameters": done.hyperparameters,
        "train_seconds": round(train_seconds, 2),
        "features": [f.name for f in record.features],
        "sample": stored.drop(columns=[scenario.target]),
    }


def count_onnx_trees(data: bytes) -> int:
    import onnx

    graph = onnx.load_from_string(data).graph
    for node in graph.node:
        if node.op_type.startswith("TreeEnsemble"):
            for attr in node.attribute:
                if attr.name == "nodes_treeids":
                    return len(set(attr.ints))
    return 0


def count_native_trees(pipeline: Any) -> int:
    model = pipeline.named_steps["model"]
    if hasattr(model, "estimators_"):
        return len(model.estimators_)
    return int(model.tree_count_)


def records_from(sample: Any, n: int, features: list[str]) -> list[dict[str, Any]]:
    """``n`` JSON records drawn (with replacement) from the training data."""
    rng = np.random.default_rng(SEED)
    rows = sample.iloc[rng.integers(0, len(sample), size=n)]
    out = []
    for row in rows.itertuples(index=False):
        rec = {}
        for name, value in zip(features, row, strict=True):
            rec[name] = value if isinstance(value, str) else float(value)
        out.append(rec)
    return out


# -- warm measurements -----------------------------------------------------------------------
@contextmanager
def stdout_to_devnull() -> Iterator[None]:
    """Handlers print EMF metrics and JSON log lines to stdout (CloudWatch on Lambda): keep the
    writes, drop the text. Progress goes to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def settings_changed(updates: dict[str, str]) -> Iterator[None]:
    """Run with some MLFN_ settings changed (the handlers rebuild their process objects)."""
    from common import context

    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    context.reset()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        context.reset()


def forward_event(version: str, path: str, model: str, body: Any) -> dict[str, Any]:
    build = v1_event if version == "v1" else v2_event
    return build("POST", path, {"model": model}, json.dumps(body),
                 {"Content-Type": "application/json"})


def answer(handler: Any, event: dict[str, Any], ctx: Any) -> Any:
    import base64

    out = handler(event, ctx)
    if out["statusCode"] != 200:
        raise SystemExit(f"handler answered {out['statusCode']}: {out.get('body')}")
    body = out["body"]
    return json.loads(base64.b64decode(body) if out.get("isBase64Encoded") else body)


Series = tuple[Any, dict[str, Any], int]
"""(handler, event, timed calls per round)."""


def interleaved(series: dict[str, Series], ctx: Any, rounds: int, warmup: int) -> dict[str, np.ndarray]:
    """Per-call seconds of each series, measured in alternating rounds.

    Ours and the baseline take turns, so background load on a shared machine hits both alike
    and their ratio stays meaningful.
    """
    clock = time.perf_counter_ns
    for handler, event, calls in series.values():
        answer(handler, event, ctx)
        for _ in range(max(2, min(warmup, calls * 2))):
            handler(event, ctx)
    samples: dict[str, list[int]] = {name: [] for name in series}
    for _ in range(rounds):
        for name, (handler, event, calls) in series.items():
            out = samples[name]
            for _ in range(calls):
                t = clock()
                handler(event, ctx)
                out.append(clock() - t)
    return {name: np.asarray(v, dtype=np.float64) / 1e9 for name, v in samples.items()}


def latency_stats(seconds: np.ndarray) -> dict[str, float]:
    us = seconds * 1e6
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "mean_us": float(us.mean()), "calls": int(us.size)}


def throughput_stats(seconds: np.ndarray, rows: int) -> dict[str, float]:
    median = float(np.median(seconds))
    return {"rows_per_s": rows / median, "median_ms": median * 1e3, "calls": int(seconds.size)}


def agreement(task: str, ours: list[Any], theirs: list[Any], ours_p: Any, theirs_p: Any) -> dict[str, Any]:
    if task == "regression":
        diff = np.abs(np.asarray(ours, dtype=float) - np.asarray(theirs, dtype=float))
        rel = diff / np.maximum(1.0, np.abs(np.asarray(theirs, dtype=float)))
        return {"max_rel_diff": float(rel.max()), "ok": bool(rel.max() <= 1e-4)}
    labels = sum(a != b for a, b in zip(ours, theirs, strict=True))
    worst = max(abs(a[k] - b[k]) for a, b in zip(ours_p, theirs_p, strict=True) for k in a)
    # A label may flip only on an exact tie, which a probability within tolerance explains.
    return {"label_mismatches": int(labels), "max_proba_diff": float(worst),
            "ok": bool(worst <= 1e-4)}


# -- cold start ------------------------------------------------------------------------------
COLD_SCRIPT = r"""
import json, sys, types
root, module_name, attr, event_path, heavy_names = sys.argv[1:6]
sys.path.insert(0, root)
with open(event_path) as fh:
    event = json.load(fh)
ctx = types.SimpleNamespace(
    function_name="bench", function_version="$LATEST",
    invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:bench",
    memory_limit_in_mb=1024, aws_request_id="cold", log_group_name="/aws/lambda/bench",
    log_stream_name="local", get_remaining_time_in_millis=lambda: 30_000)
import time
t0 = time.perf_counter()
import importlib
handler = getattr(importlib.import_module(module_name), attr)
t1 = time.perf_counter()
out = handler(event, ctx)
t2 = time.perf_counter()
out2 = handler(event, ctx)
t3 = time.perf_counter()
heavy = [m for m in heavy_names.split(",") if m in sys.modules]
print("BENCH-RESULT", json.dumps({"import_ms": (t1 - t0) * 1e3, "first_call_ms": (t2 - t1) * 1e3,
                  "total_ms": (t2 - t0) * 1e3, "second_call_ms": (t3 - t2) * 1e3,
                  "status": [out["statusCode"], out2["statusCode"]], "heavy": heavy}))
"""


def cold_once(module: str, attr: str, event_path: Path, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", COLD_SCRIPT, str(ROOT), module, attr, str(event_path),
         ",".join(HEAVY_MODULES)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    wall = (time.perf_counter() - started) * 1e3
    if proc.returncode != 0:
        raise SystemExit(f"cold start of {module} failed:\n{proc.stderr}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BENCH-RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH-RESULT "))
    if result["status"] != [200, 200]:
        raise SystemExit(f"cold start of {module} answered {result['status']}")
    result["process_wall_ms"] = wall
    return result


def interpreter_startup(env: dict[str, str], runs: int) -> float:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        walls.append((time.perf_counter() - started) * 1e3)
    return statistics.median(walls)


def cold_start(event_path: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    """Median of ``runs`` fresh processes each, interleaved, after one discarded warm-up each
    (which compiles .pyc files and fills the page cache, as a provisioned image would have)."""
    # Deployed code ships its bytecode (the Lambda builds precompile it): let the warm-up write
    # it even where the environment says not to.
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    sides = {"ours": ("functions.forward.handler", "handler"),
             "ours_fastapi": ("bench.ours_fastapi", "handler"),
             "baseline": ("bench.baseline_app", "handler")}
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
    for module, attr in sides.values():
        cold_once(module, attr, event_path, env)
    for _ in range(runs):
        for name, (module, attr) in sides.items():
            samples[name].append(cold_once(module, attr, event_path, env))
    out: dict[str, Any] = {}
    for name, runs_ in samples.items():
        out[name] = {
            key: statistics.median(r[key] for r in runs_)
            for key in ("import_ms", "first_call_ms", "total_ms", "second_call_ms", "process_wall_ms")
        }
        out[name]["total_ms_all"] = [round(r["total_ms"], 1) for r in runs_]
        out[name]["heavy"] = sorted({m for r in runs_ for m in r["heavy"]})
    return out


# -- profile ---------------------------------------------------------------------------------
def profile(handler: Any, event: dict[str, Any], ctx: Any, calls: int) -> str:
    import cProfile
    import io
    import pstats

    for _ in range(200):
        handler(event, ctx)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        handler(event, ctx)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    return buf.getvalue()


# -- report ----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = {}
    for lib in ("onnxruntime", "numpy", "scikit-learn", "catboost", "pandas", "fastapi",
                "starlette", "mangum", "orjson"):
        try:
            libs[lib] = version(lib)
        except Exception:
            libs[lib] = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "libraries": libs}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def row(cells: list[str], widths: list[int]) -> str:
    pairs = enumerate(zip(cells, widths, strict=True))
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)


def print_table(title: str, rows: list[list[str]]) -> None:
    header = ["", "ours", "baseline", "ours faster by", "target"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print(row(header, widths))
    print(row(["-" * w for w in widths], widths))
    for r in rows:
        print(row(r, widths))


@dataclass
class Plan:
    calls_ours: int
    calls_base: int
    batch_calls: int
    rounds: int
    cold_runs: int
    profile: bool


def measure(scenarios: list[Scenario], plan: Plan, data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """Train, then measure every scenario; the handlers' stdout must already be redirected."""
    from common import context
    from common.backends import Backends
    from common.lifecycle import Lifecycle
    from common.serving import Serving
    from common.settings import Settings

    started = time.perf_counter()
    backends = Backends.from_settings(Settings(data_dir=data_dir))
    lifecycle = Lifecycle(backends, Serving(backends))
    for s in scenarios:
        s.info = train(lifecycle, s)
        progress(f"trained {s.model} in {s.info['train_seconds']} s: ONNX "
                 f"{s.info['onnx_bytes'] / 1e6:.2f} MB, pickle {s.info['pickle_bytes'] / 1e6:.2f} MB")
    context.reset()

    import bench.baseline_app as baseline
    import bench.ours_fastapi as forward_api
    import functions.forward.handler as forward
    import functions.forward_batch.handler as forward_batch

    ctx = lambda_context("forward")
    rounds = plan.rounds
    results: dict[str, Any] = {"scenarios": {}, "broken": False}

    for s in scenarios:
        res: dict[str, Any] = {k: v for k, v in s.info.items() if k not in ("sample", "features")}
        res["description"] = s.description
        records = records_from(s.info["sample"], 1000, s.info["features"])
        record = records[0]

        # Same answers? Ours against the pickled native model on the 1000 batch rows.
        batch_body = {"records": records}
        batch_event = forward_event("v1", "/forward_batch", s.model, batch_body)
        ours_b = answer(forward_batch.handler, batch_event, ctx)
        base_b = answer(baseline.handler, batch_event, ctx)
        res["agreement"] = agreement(s.task, ours_b["predictions"], base_b["predictions"],
                                     ours_b.get("probabilities"), base_b.get("probabilities"))
        results["broken"] |= not res["agreement"]["ok"]

        v1 = forward_event("v1", "/forward", s.model, record)
        if s.latency:
            series: dict[str, Series] = {}
            for version in ("v1", "v2") if s.v2 else ("v1",):
                event = forward_event(version, "/forward", s.model, record)
                series[f"forward_{version}"] = (forward.handler, event, plan.calls_ours // rounds)
                series[f"baseline_{version}"] = (baseline.handler, event, plan.calls_base // rounds)
            for name, seconds in interleaved(series, ctx, rounds, 300).items():
                res[name] = latency_stats(seconds)
            if s.checks_targets:
                # Our route through FastAPI + Mangum, and the baseline's transport with an endpoint
                # that only parses the body.
                one = {"fastapi": (forward_api.handler, v1, plan.calls_ours // rounds),
                       "floor": (baseline.floor_handler, v1, plan.calls_ours // rounds)}
                for name, seconds in interleaved(one, ctx, rounds // 2, 300).items():
                    res[f"{name}_v1"] = latency_stats(seconds)
                for name, (updates, _) in VARIANTS.items():
                    with settings_changed(updates):
                        one = {name: (forward.handler, v1, plan.calls_ours // rounds)}
                        seconds = interleaved(one, ctx, rounds // 2, 300)[name]
                    res[f"variant_{name}"] = latency_stats(seconds)
                if plan.profile:
                    res["profile"] = profile(forward.handler, v1, ctx, 2000)
        if s.batch:
            batch = interleaved({"batch_ours": (forward_batch.handler, batch_event, 1),
                                 "batch_baseline": (baseline.handler, batch_event, 1)},
                                ctx, plan.batch_calls, 2)
            for name, seconds in batch.items():
                res[name] = throughput_stats(seconds, len(records))

        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(v1, fh)
        try:
            res["cold"] = cold_start(Path(fh.name), env, plan.cold_runs)
        finally:
            os.unlink(fh.name)
        results["scenarios"][s.key] = res
        progress(f"measured {s.key} ({time.perf_counter() - started:.0f} s so far)")

    results["interpreter_startup_ms"] = interpreter_startup(env, plan.cold_runs)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls; only the 100-tree forest")
    parser.add_argument("--runs", type=int, default=7, help="cold-start processes per side")
    parser.add_argument("--only", choices=[s.key for s in SCENARIOS], action="append",
                        help="run only these scenarios (repeatable)")
    parser.add_argument("--profile", action="store_true", help="cProfile our warm v1 forward")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args(argv)

    if args.quick:
        plan = Plan(2000, 200, 5, 10, 3, args.profile)
    else:
        plan = Plan(5000, 500, 15, 10, args.runs, args.profile)
    wanted = args.only or (["rf100"] if args.quick else [s.key for s in SCENARIOS])
    scenarios = [s for s in SCENARIOS if s.key in wanted]

    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="mlfn-bench-"))
    # The handlers read their settings from the environment: embedded backends, LAMBDA_ENV.
    for key in [k for k in os.environ if k.startswith("MLFN_")]:
        del os.environ[key]
    os.environ.update({"MLFN_DATA_DIR": str(data_dir), **LAMBDA_ENV})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)

    info = machine()
    load_start = list(os.getloadavg())
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in info["libraries"].items()))
    print(f"store: {data_dir}; settings: {LAMBDA_ENV}", flush=True)
    try:
        with stdout_to_devnull():
            results = measure(scenarios, plan, data_dir, env)
    finally:
        if args.keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    results["machine"] = info
    results["settings"] = LAMBDA_ENV
    results["load_average"] = {"start": load_start, "end": list(os.getloadavg())}
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    report(results, scenarios)
    for key, res in results["scenarios"].items():
        if "profile" in res:
            print(f"\ncProfile of 2000 warm v1 forward calls ({key}):")
            print(res.pop("profile"))
    if not args.no_json:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        text = json.dumps(results, indent=2, default=str)
        (RESULTS_DIR / f"forward-{stamp}.json").write_text(text)
        (RESULTS_DIR / "forward-latest.json").write_text(text)
        print(f"\nresults written to {RESULTS_DIR / f'forward-{stamp}.json'}")
    return 1 if results["broken"] else 0


def report(results: dict[str, Any], scenarios: list[Scenario]) -> None:
    load = results["load_average"]
    print(f"\nload average (1 min) at start {load['start'][0]:.2f}, at end {load['end'][0]:.2f} "
          f"on {results['machine']['cores']} cores (other processes share the machine)")
    print(f"python interpreter start-up (python -c pass, process wall): "
          f"{results['interpreter_startup_ms']:.0f} ms")
    for s in scenarios:
        res = results["scenarios"][s.key]
        rows: list[list[str]] = []
        for version in ("v1", "v2"):
            ours, base = res.get(f"forward_{version}"), res.get(f"baseline_{version}")
            if not ours or not base:
                continue
            for pct in ("p50", "p99"):
                o, b = ours[f"{pct}_us"], base[f"{pct}_us"]
                target = ""
                if s.checks_targets and pct == "p50":
                    target = (f"<= {FORWARD_P50_TARGET_US:.0f} us {verdict(o <= FORWARD_P50_TARGET_US)}"
                              f", >= {SPEEDUP_TARGET:.0f}x {verdict(b / o >= SPEEDUP_TARGET)}")
                rows.append([f"forward {version} {pct}", f"{o:,.0f} us", f"{b:,.0f} us",
                             f"{b / o:.1f}x", target])
        labels = {"fastapi_v1": "our route via FastAPI + Mangum",
                  "floor_v1": "FastAPI + Mangum transport only (no model)"}
        labels.update({f"variant_{name}": label for name, (_, label) in VARIANTS.items()})
        for key, label in labels.items():
            variant = res.get(key)
            if variant:
                for pct in ("p50", "p99"):
                    rows.append([f"  v1 {pct}, {label}", f"{variant[f'{pct}_us']:,.0f} us",
                                 "", "", ""])
        if "batch_ours" in res:
            o, b = res["batch_ours"]["rows_per_s"], res["batch_baseline"]["rows_per_s"]
            rows.append(["forward_batch 1000 rows", f"{o:,.0f} rows/s", f"{b:,.0f} rows/s",
                         f"{o / b:.2f}x", ""])
            rows.append(["  (median per batch)", f"{res['batch_ours']['median_ms']:.1f} ms",
                         f"{res['batch_baseline']['median_ms']:.1f} ms", "", ""])
        cold = res["cold"]
        size_mb = res["onnx_bytes"] / 1e6
        o, b = cold["ours"]["total_ms"], cold["baseline"]["total_ms"]
        target = ""
        if size_mb <= COLD_START_MAX_MODEL_MB:
            target = f"<= {COLD_START_TARGET_MS:.0f} ms {verdict(o <= COLD_START_TARGET_MS)}"
        rows.append(["cold: import + first call", f"{o:,.0f} ms", f"{b:,.0f} ms", f"{b / o:.1f}x",
                     target])
        rows.append(["  ours via FastAPI + Mangum", f"{cold['ours_fastapi']['total_ms']:,.0f} ms",
                     "", "", ""])
        for key, label in (("import_ms", "  import handler module"),
                           ("first_call_ms", "  first call (load + predict)"),
                           ("second_call_ms", "  second call"),
                           ("process_wall_ms", "  process wall (spawn..exit)")):
            rows.append([label, f"{cold['ours'][key]:,.1f} ms", f"{cold['baseline'][key]:,.1f} ms",
                         "", ""])
        print_table(
            f"{s.key}: {s.description}\n  ONNX {size_mb:.2f} MB ({res['onnx_trees']} trees), "
            f"pickle {res['pickle_bytes'] / 1e6:.2f} MB ({res['native_trees']} trees); "
            f"agreement {res['agreement']}",
            rows,
        )
        heavy = cold["ours"]["heavy"]
        print(f"  heavy modules imported by our cold process: {heavy or 'none'} "
              f"{verdict(not heavy)}; cold totals ours {cold['ours']['total_ms_all']} ms, "
              f"baseline {cold['baseline']['total_ms_all']} ms")
    print(f"\nelapsed {results['elapsed_s']} s")


if __name__ == "__main__":
    raise SystemExit(main())
