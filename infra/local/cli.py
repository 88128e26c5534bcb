"""The ``mlfn`` command: run the local service, or invoke one handler on an event file."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def lambda_context(function_name: str) -> Any:
    """The attributes of a Lambda context object that handlers and Powertools read."""
    return SimpleNamespace(
        function_name=function_name,
        function_version="$LATEST",
        invoked_function_arn=f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}",
        memory_limit_in_mb=1024,
        aws_request_id=str(uuid.uuid4()),
        log_group_name=f"/aws/lambda/{function_name}",
        log_stream_name="local",
        get_remaining_time_in_millis=lambda: 30_000,
    )


def function_for(event: Any) -> str | None:
    """The function that handles ``event``: the one whose route matches an API Gateway event's
    method and path, or for an SQS event the ingestion worker (task messages) or the training
    worker."""
    from common.errors import NotFound
    from common.web.lambda_events import parse_event
    from common.web.routing import RouteTable
    from infra.local.server import function_names, routes_of

    records = event.get("Records") if isinstance(event, dict) else None
    if records and all(r.get("eventSource") == "aws:sqs" for r in records):
        if all('"task": "batch_' in str(r.get("body")) for r in records):
            return "score_worker"
        return "ingest_worker" if all('"task"' in str(r.get("body")) for r in records) \
            else "train_worker"
    parsed = parse_event(event)
    if parsed is None:
        return None
    _, request = parsed
    for name in function_names():
        table = RouteTable(routes_of(name))
        try:
            table.match(request.method, request.path)
        except NotFound:
            continue
        except Exception:  # the path is this function's, the method another (405 from it)
            return name
        return name
    return None


def invoke(name: str | None, event: dict[str, Any]) -> Any:
    """Run ``functions/<name>/handler.py``'s handler in-process, as ``sam local invoke`` would;
    without a name, the function whose route the event is for."""
    from infra.local.server import function_names

    known = function_names()
    if name not in known:
        found = function_for(event)
        if name is None and found is not None:
            name = found
        else:
            hint = f"; this event is for {found!r} (mlfn invoke {found} --event ...)" if found else ""
            what = f"unknown function {name!r}" if name else "no function routes this event"
            raise SystemExit(f"{what}; known: {', '.join(known)}{hint}")
    module = importlib.import_module(f"functions.{name}.handler")
    return module.handler(event, lambda_context(name))


def write_samples(out: Path) -> None:
    """Digit images from scikit-learn's data set: single PNGs, a labelled and an unlabelled zip."""
    import io
    import zipfile

    from sklearn.datasets import load_digits

    from common.demo import digits_archive, digits_png

    out.mkdir(parents=True, exist_ok=True)
    targets = load_digits().target
    for digit in range(10):
        index = next(i for i in range(1700, len(targets)) if targets[i] == digit)
        (out / f"digit_{digit}.png").write_bytes(digits_png(index))
    labelled = digits_archive(range(1500, 1797))
    (out / "labelled.zip").write_bytes(labelled)
    flat = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(labelled)) as src, zipfile.ZipFile(flat, "w") as dst:
        for name in src.namelist()[:20]:
            dst.writestr(name.split("/")[-1], src.read(name))
    (out / "unlabelled.zip").write_bytes(flat.getvalue())
    print(f"wrote 10 PNGs, labelled.zip and unlabelled.zip to {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlfn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the local service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--data-dir", type=Path, help="root of the embedded stores (MLFN_DATA_DIR)")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes on the one port (default 1); each trains queued "
                            "jobs too, claimed through the experiment store")
    serve.add_argument("--access-log", action="store_true",
                       help="log every request (off by default: it costs throughput)")
    serve.add_argument("--grpc-port", type=int,
                       help="the gRPC services' port (MLFN_GRPC_PORT, default 8081; 0: no gRPC)")
    call = sub.add_parser("invoke", help="run one handler on an event file, in-process")
    call.add_argument("name", nargs="?",
                      help="function name, e.g. forward (default: the one the event's route is for)")
    call.add_argument("--event", "-e", type=Path, required=True, help="event JSON file")
    call.add_argument("--data-dir", type=Path, help="root of the embedded stores (MLFN_DATA_DIR)")
    samples = sub.add_parser("sample-images", help="write digit PNGs and zips to try image models")
    samples.add_argument("out", type=Path, help="output directory")
    sweep = sub.add_parser("gc", help="remove what crashes left behind (orphan files, temp files)")
    sweep.add_argument("--min-age", type=float, default=3600.0,
                       help="only files older than this many seconds (default 3600: a write in "
                            "progress looks like an orphan until its row is written)")
    sweep.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    sweep.add_argument("--data-dir", type=Path, help="root of the embedded stores (MLFN_DATA_DIR)")
    work = sub.add_parser("worker", help="train queued experiments from the SQS retrain queue "
                                          "(or, with --queue ingest, ingest uploads)")
    work.add_argument("--once", action="store_true", help="one receive, then exit")
    work.add_argument("--queue", choices=("jobs", "ingest", "batch"), default="jobs",
                      help="jobs: MLFN_QUEUE_URL (trainings, default); ingest: "
                           "MLFN_INGEST_QUEUE_URL (ingestions of uploads); batch: "
                           "MLFN_BATCH_QUEUE_URL (batch scoring jobs)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "data_dir", None) is not None:
        os.environ["MLFN_DATA_DIR"] = str(args.data_dir)

    if args.command == "invoke":
        event = json.loads(args.event.read_text())
        # Like `sam local invoke`: the function's logs and metrics on stderr, its answer on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            answer = invoke(args.name, event)
            from common import context

            context.wait_for_jobs()  # a queued retrain trains before the command exits
        json.dump(answer, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0

    if args.command == "sample-images":
        write_samples(args.out)
        return 0

    if args.command == "gc":
        from datetime import timedelta

        from common import context
        from common.gc import collect

        found = collect(context.backends(), timedelta(seconds=args.min_age), args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        for kind, keys in (("temp file", found.temporary), ("dataset part", found.parts),
                           ("model file", found.models), ("expired upload", found.uploads),
                           ("scratch file", found.scratch), ("expired record", found.records),
                           ("batch output", found.batch_outputs)):
            for key in keys:
                print(f"{verb} {kind} {key}")
        print(f"{verb} {found.total} files and records")
        return 0

    if args.command == "worker":
        from infra.local.worker import run

        run(once=args.once, queue=args.queue)
        return 0

    if args.grpc_port is not None:
        os.environ["MLFN_GRPC_PORT"] = str(args.grpc_port)
    os.environ.setdefault("MLFN_GRPC_HOST", args.host)
    return serve_http(args.host, args.port, args.workers, args.access_log)


def serve_http(host: str, port: int, workers: int, access_log: bool) -> int:
    """uvicorn on uvloop and httptools where they are installed (they are on Linux and macOS)."""
    import importlib.util

    import uvicorn

    from infra.local import server

    if workers < 1:
        raise SystemExit("--workers must be at least 1")
    options: dict[str, Any] = {
        "host": host, "port": port, "log_level": "info", "access_log": access_log,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "auto",
        "http": "httptools" if importlib.util.find_spec("httptools") else "auto",
    }
    if workers == 1:
        uvicorn.run(server.build_app(), **options)
        return 0
    from common import context

    os.environ["MLFN_GRPC_SHARED_PORT"] = "true"  # every process serves gRPC on the one port
    server.prepare_store(context.settings())  # once, before the processes start
    context.reset()  # the processes open their own connections
    uvicorn.run("infra.local.server:worker_app", factory=True, workers=workers, **options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
