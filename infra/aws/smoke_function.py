"""Invoke one built zip function on its sample events, the way Lambda would run it.

Run by infra/aws/artifacts.py as ``python3.12 -S smoke_function.py SPEC.json``: no
site-packages, so the only code importable is the standard library, the function's artifact,
its layers and the runtime's own boto3 (in that order, as on Lambda). SPEC.json holds
``{"name", "paths", "events", "data_dir"}``. The stores are the embedded defaults (SQLite, local
files, in-process queue) in ``data_dir``: empty, or seeded with the demo models. An answer can be
4xx (no such model) but never 5xx, and no training library may be imported.

Lambda's code and layer directories are read-only, so the process runs with
PYTHONDONTWRITEBYTECODE=1, and every module imported from the artifact or its layers must come
with its .pyc (the builds precompile them); otherwise each cold start would compile it again.
"""

import json
import os
import sys
import tempfile
import time
import uuid
from types import SimpleNamespace

TRAINING_ONLY = ("sklearn", "catboost", "pandas", "pyarrow", "skl2onnx", "scipy", "onnx")


def context(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        function_name=name, function_version="$LATEST", memory_limit_in_mb=1024,
        invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
        aws_request_id=str(uuid.uuid4()), log_group_name=f"/aws/lambda/{name}",
        log_stream_name="smoke", get_remaining_time_in_millis=lambda: 15_000,
    )


def uncompiled(roots: list[str]) -> list[str]:
    """Imported modules from the artifact or its layers that have no bytecode beside them."""
    roots = [os.path.realpath(r) + os.sep for r in roots]
    missing = []
    for name, module in sorted(sys.modules.items()):
        source = getattr(module, "__file__", None) or ""
        if not source.endswith(".py") or not os.path.realpath(source).startswith(tuple(roots)):
            continue
        cached = getattr(module, "__cached__", None)
        if not cached or not os.path.exists(cached):
            missing.append(name)
    return missing


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    sys.path[:0] = spec["paths"]["code"]
    sys.path.extend(spec["paths"]["runtime"])
    os.chdir(tempfile.mkdtemp(prefix="mlfn-smoke-"))
    os.environ["MLFN_DATA_DIR"] = spec["data_dir"]

    import importlib

    name = spec["name"]
    started = time.perf_counter()
    module = importlib.import_module(f"functions.{name}.handler")
    print(f"    import of the handler module: {(time.perf_counter() - started) * 1e3:.0f} ms "
          "(no bytecode written, as on Lambda)", flush=True)
    failures = []
    for event_path in spec["events"]:
        with open(event_path) as f:
            event = json.load(f)
        result = module.handler(event, context(name))
        status = result.get("statusCode") if isinstance(result, dict) else None
        body = str(result.get("body", ""))[:100] if isinstance(result, dict) else repr(result)
        print(f"    {os.path.basename(event_path):24} -> {status} {body}", flush=True)
        if not isinstance(status, int) or status >= 500:
            failures.append(f"{os.path.basename(event_path)} answered {status}")
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(TRAINING_ONLY))
    if heavy:
        failures.append(f"imported training libraries: {', '.join(heavy)}")
    compiled = uncompiled(spec["paths"]["code"])
    if compiled:
        failures.append(f"{len(compiled)} modules have no .pyc and are compiled on every cold "
                        f"start, e.g. {', '.join(compiled[:5])}")
    for failure in failures:
        print(f"    FAIL {name}: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Not sys.exit: a retrain leaves the in-process queue's worker thread waiting for jobs.
    os._exit(code)
