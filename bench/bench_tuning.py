"""Parallel tuning (issue 14): a tuned random forest (its grid: 8 candidates) with 1 and with 2
worker processes sharing the embedded store, and the speed-up::

    .venv/bin/python bench/bench_tuning.py                # ~2 minutes on 2 cores
    .venv/bin/python bench/bench_tuning.py --repeat 1 --rows 5000    # quicker

Each worker process runs the embedded job worker (``mlfn serve``'s, one thread per process)
on the same SQLite store and data directory. The workers start and import the training stack
first, as the training worker does when it starts (``common.training.trainer.preload``); then
the experiment is recorded (``PUT /retrain`` with ``tune: true``: its 8 candidates become jobs)
and the clock runs until it succeeded: 8 cross-validated candidates, then the refit of the best
and its ONNX export through the parity gate, which is one job whatever the workers. Both runs
must pick the same hyperparameters. The rounds alternate a 1-worker and a 2-worker run
(``--repeat``, 3 by default) and the medians are compared, since one run of either moves by
a second or more on a shared VM. Target: 2 workers at least 1.7x as fast as 1; it prints
PASS/MISS and never fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def run(workers: int, data_dir: Path, model: str) -> tuple[float, float, dict, list[dict]]:
    """Wall seconds from recording the tuned experiment to its success with ``workers``
    processes, the seconds of its refit (the experiment's own job); its hyperparameters and
    candidates."""
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
        refit = (done.finished_at - done.started_at).total_seconds()
        return wall, refit, done.hyperparameters, life.metrics(exp.id)["candidates"]
    finally:
        for proc in procs:  # only the processes this run started
            proc.kill()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8_000, help="rows of the churn-like dataset")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of a 1-worker and a 2-worker run; the medians are compared")
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
        walls: dict[int, list[float]] = {1: [], 2: []}
        picked: set[str] = set()
        for round_ in range(1, args.repeat + 1):
            for workers in (1, 2):  # alternating, so that a slower spell of the VM hits both
                wall, refit, params, candidates = run(workers, data_dir, "churn")
                walls[workers].append(wall)
                picked.add(json.dumps(params, sort_keys=True))
                scored = sum(c["status"] == "succeeded" for c in candidates)
                print(f"  round {round_}, {workers} worker process{'es' if workers > 1 else ''}: "
                      f"{wall:6.1f} s (the refit {refit:.1f} s; {scored} candidates scored; best "
                      f"{params['n_estimators']} trees, max_depth {params['max_depth']}, "
                      f"min_samples_leaf {params['min_samples_leaf']})")
        one, two = statistics.median(walls[1]), statistics.median(walls[2])
        speedup = one / two
        verdict = "PASS" if speedup >= TARGET else "MISS"
        rounds = ", ".join(f"{a / b:.2f}x" for a, b in zip(walls[1], walls[2], strict=True))
        print(f"  median of {args.repeat}: 1 worker {one:.1f} s, 2 workers {two:.1f} s; speed-up "
              f"{speedup:.2f}x (target >= {TARGET}x: {verdict}; each round: {rounds}); "
              f"same best candidate in every run: {'yes' if len(picked) == 1 else 'NO'}")
        context.reset()


if __name__ == "__main__":
    main()
