"""Invoke one built zip function on its sample events, the way Lambda would run it.

Run by infra/aws/artifacts.py as ``python3.12 -S smoke_function.py SPEC.json``: no
site-packages, so the only code importable is the standard library, the function's artifact,
its layers and the runtime's own boto3 (in that order, as on Lambda). SPEC.json holds
``{"name", "paths", "events", "data_dir"}``. The stores are the embedded defaults (SQLite, local
files, in-process queue) in ``data_dir``: empty, or seeded with the demo models. An answer can be
4xx (no such model) but never 5xx, and no training library may be imported.
"""

import json
import os
import sys
import tempfile
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


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    sys.path[:0] = spec["paths"]["code"]
    sys.path.extend(spec["paths"]["runtime"])
    os.chdir(tempfile.mkdtemp(prefix="mlfn-smoke-"))
    os.environ["MLFN_DATA_DIR"] = spec["data_dir"]

    import importlib

    name = spec["name"]
    module = importlib.import_module(f"functions.{name}.app")
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
    for failure in failures:
        print(f"    FAIL {name}: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Not sys.exit: a retrain leaves the in-process queue's worker thread waiting for jobs.
    os._exit(code)
