"""Beyond one request (issue 14): a ~1 GB CSV ingested through an upload, scored as a batch job
with 1 and 2 worker processes beside the ONNX Runtime floor, and the tuning fan-out::

    .venv/bin/python bench/bench_scale.py                       # 10 million rows, ~15 minutes
    .venv/bin/python bench/bench_scale.py --rows 1000000 --no-tuning   # ~2 minutes

The file (20 numeric columns with two decimals, 2 categorical ones and the target) is written
on the fly from a pool of generated rows drawn in random order. Everything runs on the embedded
store (SQLite and a data directory) as ``mlfn serve`` does, with the task workers in separate
processes (one task thread each, as ``mlfn serve`` runs them) and this process only recording
work, as the HTTP routes do:

* **ingestion**: the upload is received (``PUT /uploads/{id}/content``'s call), then
  ``PUT /add_data?upload=`` queues it; the clock runs until the ingestion succeeded: every row
  checked as ``add_data`` checks it and written as one new dataset version (Parquet in row
  groups). The worker's peak RSS (``VmHWM``) is read when it is done, beside its RSS when idle.
  Target: at most 1.5 GB whatever the file's size.
* **scoring**: a batch job on a second upload of the same file, with 1 and with 2 worker
  processes: from ``POST /batch_jobs`` to a succeeded job (plan, every chunk, the assembled
  result), and the chunk phase alone (the job's own ``rows_per_second``). The model is a random
  forest with the demo's settings (101 trees, as ``breast-cancer``) trained on a demo-sized
  sample (569 rows, the size of ``breast-cancer``'s data). Beside it, the floor: ONNX Runtime
  alone scoring the same rows, already in arrays, in 1 and 2 processes (no parsing, no output).
  Targets: 300 000 rows/s with 2 workers; 2 workers at least 1.7x as fast as 1.
* **tuning**: ``bench/bench_tuning.py`` (8 candidates with 1 and 2 worker processes).

It prints PASS/MISS per target and never fails on a number.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "scale"
TRAIN_ROWS = 569  # breast-cancer's rows: the demo forest's training size
RSS_TARGET = 1.5e9
ROWS_TARGET = 300_000
SPEEDUP_TARGET = 1.7

WORKER = """
import sys, time
sys.path.insert(0, {root!r})
import common.batch_jobs, common.ingestion, pandas, pyarrow.parquet  # warm: imports done
from common import context
context._task_pool().start()  # one task thread (MLFN_TASK_WORKERS=1), polling the store
print("ready", flush=True)
while True:
    time.sleep(3600)
"""

FLOOR = """
import sys, time
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
from bench_scale import frame
from common import context
model = context.serving().load({model!r}, {experiment})
features = {{f.name: f for f in model.features}}
pool = frame({block}, seed=7)
feeds = {{}}
for name, f in features.items():
    column = pool[name].to_numpy()
    kind = f.kind.value
    feeds[name] = (column.astype("float32") if kind == "numeric" else column.astype(object)).reshape(-1, 1)
model.scores(feeds)  # warm
print("ready", flush=True)
sys.stdin.readline()
started = time.perf_counter()
for _ in range({repeats}):
    model.scores(feeds)
print(time.perf_counter() - started, flush=True)
"""


def env_for(data_dir: Path, workers: int) -> dict[str, str]:
    return {**os.environ, "MLFN_DATA_DIR": str(data_dir), "MLFN_DEMO_MODELS": "false",
            "MLFN_INFERENCE_LOG": "off", "MLFN_JOB_POLL_SECONDS": "0.1",
            "MLFN_TASK_WORKERS": str(workers), "MLFN_EMF": "off",
            "PYDANTIC_DISABLE_PLUGINS": "__all__"}


def frame(n: int, seed: int = 0) -> Any:
    """``n`` rows: 20 numeric features (two decimals), a plan, a region, and ``churned`` from a
    noisy rule of some of them."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {f"x{i}": rng.normal(size=n).round(2) for i in range(20)}
    cols["plan"] = rng.choice(["basic", "plus", "premium"], n)
    cols["region"] = rng.choice(["north", "south", "east", "west"], n)
    score = cols["x0"] + 0.5 * cols["x1"] - cols["x2"] * (cols["plan"] == "plus") + 0.3 * cols["x3"]
    cols["churned"] = np.where(score + rng.normal(scale=0.5, size=n) > 0, "yes", "no")
    return pd.DataFrame(cols)


def write_csv(path: Path, rows: int, target: bool) -> int:
    """A CSV of ``rows`` rows drawn from a pool of 200 000 generated ones (with the target
    column or without it); its size in bytes."""
    import numpy as np

    pool = frame(200_000, seed=1)
    header, *lines = (pool if target else pool.drop(columns=["churned"])).to_csv(
        index=False).splitlines()
    rng = np.random.default_rng(2)
    with open(path, "w") as out:
        out.write(header + "\n")
        left = rows
        while left:
            k = min(left, 250_000)
            out.write("\n".join([lines[i] for i in rng.integers(0, len(lines), k).tolist()]))
            out.write("\n")
            left -= k
    return path.stat().st_size


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def start_workers(n: int, data_dir: Path) -> list[subprocess.Popen[str]]:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER.format(root=str(ROOT))],
                              env=env_for(data_dir, 1), stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return procs


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


def wait_for(get: Any, done: tuple[str, ...] = ("succeeded", "failed")) -> dict[str, Any]:
    while True:
        got: dict[str, Any] = get()
        if got["status"] in done:
            return got
        time.sleep(0.1)


def upload(path: Path) -> str:
    from common import context

    uploads = context.ingestions().uploads
    doc = uploads.create(MODEL, path.stat().st_size, path.name)
    spool = path.with_suffix(".spool")  # the HTTP adapter's spool file: received, then moved
    os.link(path, spool)
    try:
        uploads.receive(doc["upload_id"], spool, b"")
    finally:
        spool.unlink(missing_ok=True)
    return str(doc["upload_id"])


def ingest(path: Path, data_dir: Path) -> dict[str, Any]:
    from common import context

    (worker,) = start_workers(1, data_dir)
    try:
        idle = status_kb(worker.pid, "VmRSS") * 1024
        upload_id = upload(path)
        started = time.perf_counter()
        job = context.ingestions().start(MODEL, upload_id)
        done = wait_for(lambda: context.ingestions().status(job["ingestion_id"]))
        wall = time.perf_counter() - started
        peak = status_kb(worker.pid, "VmHWM") * 1024
    finally:
        stop([worker])
    if done["status"] != "succeeded":
        raise SystemExit(f"the ingestion failed: {done.get('error')}")
    return {"wall": wall, "idle": idle, "peak": peak, "rows": done["rows_added"],
            "version": done["dataset_version"]}


def score(path: Path, data_dir: Path, workers: int) -> dict[str, Any]:
    from common import context

    procs = start_workers(workers, data_dir)
    try:
        upload_id = upload(path)
        jobs = context.batch_jobs()
        started = time.perf_counter()
        job = jobs.start(MODEL, upload_id, None)
        done = wait_for(lambda: jobs.status(job["job_id"]))
        wall = time.perf_counter() - started
        peak = max(status_kb(p.pid, "VmHWM") for p in procs) * 1024
    finally:
        stop(procs)
    if done["status"] != "succeeded":
        raise SystemExit(f"the batch job failed: {done.get('error')}")
    result = jobs.records.get("batch_job", job["job_id"]).doc["result_key"]
    context.backends().datasets.delete(result)  # the next run's disk
    return {"wall": wall, "rows": done["rows_done"], "chunks": done["chunks_total"],
            "phase_rows_s": done.get("rows_per_second", 0.0), "peak": peak}


def floor(data_dir: Path, experiment: int, processes: int, rows: int) -> float:
    """Rows/s of ONNX Runtime alone in ``processes`` processes, ``rows`` rows in all."""
    block = 50_000
    repeats = max(1, rows // (block * processes))
    script = FLOOR.format(root=str(ROOT), bench=str(ROOT / "bench"), model=MODEL,
                          experiment=experiment, block=block, repeats=repeats)
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env_for(data_dir, 0),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            while (line := proc.stdout.readline()) and line.strip() != "ready":
                pass
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        walls = [float(proc.stdout.readline()) for proc in procs if proc.stdout is not None]
    finally:
        stop(procs)
    return block * repeats * processes / max(walls)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the CSV file")
    parser.add_argument("--no-tuning", action="store_true", help="skip bench_tuning.py")
    parser.add_argument("--dir", type=Path, default=None,
                        help="working directory (a temporary one by default; needs ~4x the "
                             "file's size)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlfn-bench-scale-", dir=args.dir) as tmp:
        data_dir = Path(tmp) / "data"
        os.environ.update(env_for(data_dir, 0))  # this process records; workers run the tasks
        from common import context

        context.reset()
        life = context.lifecycle()
        life.jobs = None
        life.create_model({"name": MODEL, "task": "classification", "target": "churned"})
        life.add_frame(MODEL, frame(TRAIN_ROWS))
        trained = life.train_now(MODEL, {"model_class": "random_forest", "deploy": "always",
                                         "hyperparameters": {"n_estimators": 101}})
        assert trained.status.value == "succeeded", trained.error

        path, unlabelled = Path(tmp) / "scale.csv", Path(tmp) / "score.csv"
        started = time.perf_counter()
        size = write_csv(path, args.rows, target=True)
        print(f"{args.rows:,} rows, {size / 1e9:.2f} GB (20 numeric + 2 categorical columns and "
              f"the target), written in {time.perf_counter() - started:.0f} s; "
              f"{os.cpu_count()} CPUs")

        got = ingest(path, data_dir)
        print(f"ingestion: {got['wall']:.0f} s ({got['rows'] / got['wall']:,.0f} rows/s, "
              f"{size / got['wall'] / 1e6:.0f} MB/s) -> dataset version {got['version']}; "
              f"worker RSS {got['idle'] / 1e6:.0f} MB idle, peak {got['peak'] / 1e6:.0f} MB "
              f"(target <= {RSS_TARGET / 1e9:.1f} GB: {verdict(got['peak'] <= RSS_TARGET)})")

        path.unlink()
        size = write_csv(unlabelled, args.rows, target=False)
        print(f"the same rows without the target for scoring: {size / 1e9:.2f} GB")
        sample = min(args.rows, 2_000_000)
        floors = {n: floor(data_dir, trained.id, n, sample) for n in (1, 2)}
        runs = {n: score(unlabelled, data_dir, n) for n in (1, 2)}
        print(f"batch scoring (random forest, 101 trees, trained on {TRAIN_ROWS} rows; "
              f"{runs[1]['chunks']} chunks):")
        for n in (1, 2):
            run = runs[n]
            rate = run["rows"] / run["wall"]
            print(f"  {n} worker{'s' if n > 1 else ' '}: {run['wall']:6.1f} s, {rate:9,.0f} rows/s "
                  f"end to end, {run['phase_rows_s']:9,.0f} rows/s in the chunk phase; "
                  f"floor (ONNX Runtime alone) {floors[n]:9,.0f} rows/s; ours/floor "
                  f"{run['phase_rows_s'] / floors[n]:.2f}; peak RSS {run['peak'] / 1e6:.0f} MB")
        rate2 = runs[2]["rows"] / runs[2]["wall"]
        speedup = runs[1]["wall"] / runs[2]["wall"]
        print(f"  2 workers: {rate2:,.0f} rows/s end to end (target >= {ROWS_TARGET:,}: "
              f"{verdict(rate2 >= ROWS_TARGET)}); speed-up {speedup:.2f}x (target >= "
              f"{SPEEDUP_TARGET}x: {verdict(speedup >= SPEEDUP_TARGET)}); the floor's own "
              f"speed-up {floors[2] / floors[1]:.2f}x")
        print(f"  bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB")
        context.reset()

    if not args.no_tuning:
        print("tuning (bench/bench_tuning.py):", flush=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "bench_tuning.py")], check=True)


if __name__ == "__main__":
    main()
