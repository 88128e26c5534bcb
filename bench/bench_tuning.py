"""Parallel tuning (issue 14): a tuned random forest (its grid: 8 candidates) with 1 and with 2
worker processes sharing the embedded store, and the speed-up::

    .venv/bin/python bench/bench_tuning.py                # ~2 minutes on 2 cores
    .venv/bin/python bench/bench_tuning.py --rows 5000    # quicker

Each worker process runs the embedded job worker (``mlfn serve``'s, one thread per process)
on the same SQLite store and data directory. The workers start and import the training stack
first, as the training worker does when it starts (``common.training.trainer.preload``); then
the experiment is recorded (``PUT /retrain`` with ``tune: true``: its 8 candidates become jobs)
and the clock runs until it succeeded: 8 cross-validated candidates, then the refit of the best
and its ONNX export through the parity gate, which is one job whatever the workers. Both runs
must pick the same hyperparameters. Target: 2 workers at least 1.7x as fast as 1; it prints
PASS/MISS and never fails the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET = 1.7
WORKER = """
import sys, time
sys.path.insert(0, {root!r})
from common.training.trainer import preload
preload()  # the imports the training worker does at start (functions/train_worker/handler.py)
from common import context
context.lifecycle().recover()  # the embedded worker thread, polling the store
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def env_for(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "MLFN_DATA_DIR": str(data_dir), "MLFN_DEMO_MODELS": "false",
            "MLFN_INFERENCE_LOG": "off", "MLFN_JOB_POLL_SECONDS": "0.1",
            "PYDANTIC_DISABLE_PLUGINS": "__all__"}


def run(workers: int, data_dir: Path, model: str) -> tuple[float, dict, list[dict]]:
    """Wall seconds from recording the tuned experiment to its success with ``workers``
    processes; its hyperparameters and candidates."""
    from common import context
    from common.domain import ExperimentStatus

    procs = [subprocess.Popen([sys.executable, "-c", WORKER.format(root=str(ROOT))],
                              env=env_for(data_dir), stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        life = context.lifecycle()
        started = time.perf_counter()
        exp = life.retrain(model, {"model_class": "random_forest", "tune": True})
        while True:
            done = life.store.get_experiment(exp.id)
            if done.status in (ExperimentStatus.succeeded, ExperimentStatus.failed):
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        if done.status is not ExperimentStatus.succeeded:
            raise SystemExit(f"experiment {exp.id} failed: {done.error}")
        return wall, done.hyperparameters, life.metrics(exp.id)["candidates"]
    finally:
        for proc in procs:  # only the processes this run started
            proc.kill()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8_000, help="rows of the churn-like dataset")
    args = parser.parse_args()

    import pandas as pd

    from tests.lifecycle_data import churn_rows

    with tempfile.TemporaryDirectory(prefix="mlfn-bench-tuning-") as tmp:
        data_dir = Path(tmp) / "data"
        os.environ.update(env_for(data_dir))
        from common import context

        context.reset()
        life = context.lifecycle()
        life.jobs = None  # this process only records; the worker processes run the jobs
        life.create_model({"name": "churn", "task": "classification", "target": "churned"})
        life.add_frame("churn", pd.DataFrame(churn_rows(args.rows)))
        print(f"random_forest, tune: true (8 candidates, 3-fold CV each, then the refit), "
              f"{args.rows} rows, {os.cpu_count()} CPUs")
        results = {}
        for workers in (1, 2):
            wall, params, candidates = run(workers, data_dir, "churn")
            results[workers] = (wall, params)
            scored = sum(c["status"] == "succeeded" for c in candidates)
            print(f"  {workers} worker process{'es' if workers > 1 else ''}: {wall:6.1f} s "
                  f"({scored} candidates scored; best {params['n_estimators']} trees, "
                  f"max_depth {params['max_depth']}, min_samples_leaf {params['min_samples_leaf']})")
        same = results[1][1] == results[2][1]
        speedup = results[1][0] / results[2][0]
        verdict = "PASS" if speedup >= TARGET else "MISS"
        print(f"  speed-up with 2 workers: {speedup:.2f}x (target >= {TARGET}x: {verdict}); "
              f"same best candidate: {'yes' if same else 'NO'}")
        context.reset()


if __name__ == "__main__":
    main()
