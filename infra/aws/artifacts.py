"""The checks of infra/aws/check.sh that need Python: what the template builds, whether the
layer follows pyproject.toml, how big each zip function is, and whether it runs.

Run with the tools venv (it needs SAM's YAML reader)::

    .venv-aws-tools/bin/python infra/aws/artifacts.py image-functions
    .venv-aws-tools/bin/python infra/aws/artifacts.py layer-requirements
    .venv-aws-tools/bin/python infra/aws/artifacts.py image-dependencies
    .venv-aws-tools/bin/python infra/aws/artifacts.py sizes BUILD_DIR
    .venv-aws-tools/bin/python infra/aws/artifacts.py smoke BUILD_DIR PYTHON312 [--seed PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
LAYER_REQUIREMENTS = ROOT / "layers" / "onnxruntime" / "requirements.txt"
# Lambda's limit for a function and all its layers, unzipped: 250 MB of 2**20 bytes.
LIMIT_BYTES = 250 * 2**20
MB = 2**20
# Serving dependencies that stay out of the layer, with the reason.
NOT_IN_LAYER = {"fastapi": "local server only", "uvicorn": "local server only",
                "uvloop": "local server only", "httptools": "local server only"}
# What the python3.12 Lambda runtime itself provides, next to the layers.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")
# The images install the project with these extras (infra/docker/Dockerfile.*); AL2023's glibc
# (2.34) is the older of the two bases, so wheels resolved for it fit both.
IMAGE_EXTRAS = ("train", "aws", "postgres", "local")
IMAGE_PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                   "manylinux2014_x86_64")


def load_template(path: Path) -> dict[str, Any]:
    from samcli.yamlhelper import yaml_parse

    return yaml_parse(path.read_text())


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {logical_id: r.get("Properties", {}) for logical_id, r in template["Resources"].items()
            if r["Type"] == "AWS::Serverless::Function"}


def image_functions() -> int:
    for logical_id, props in functions(load_template(TEMPLATE)).items():
        if props.get("PackageType") == "Image":
            print(logical_id)
    return 0


def normalized(requirement: str) -> tuple[str, str]:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)", requirement)
    assert match, requirement
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, match.group(3).replace(" ", "")


def layer_requirements() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(normalized(r) for r in project["dependencies"])
    for name in NOT_IN_LAYER:
        wanted.pop(name, None)
    lines = [line.split("#")[0].strip() for line in LAYER_REQUIREMENTS.read_text().splitlines()]
    have = dict(normalized(line) for line in lines if line)
    if have != wanted:
        for name in sorted(set(have) | set(wanted)):
            if have.get(name) != wanted.get(name):
                print(f"  {name}: pyproject.toml {wanted.get(name, '-')!r}, "
                      f"layer {have.get(name, '-')!r}")
        print(f"  {LAYER_REQUIREMENTS.relative_to(ROOT)} differs from pyproject.toml's "
              f"dependencies (less {', '.join(NOT_IN_LAYER)})")
        return 1
    print(f"  {len(have)} requirements, the same as pyproject.toml's dependencies "
          f"(less {', '.join(f'{k}: {v}' for k, v in NOT_IN_LAYER.items())})")
    return 0


def image_dependencies() -> int:
    """Resolve the images' dependencies to cp312 x86_64 wheels (pip --dry-run: no Docker)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in IMAGE_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--dry-run", "--ignore-installed", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", "3.12", "--target", str(Path(tmp) / "target"),
               "--report", str(report)]
        for platform in IMAGE_PLATFORMS:
            cmd += ["--platform", platform]
        done = subprocess.run([*cmd, *reqs], capture_output=True, text=True)
        noise = "is ignored: it is neither a file nor a directory"  # local pip config, harmless
        sys.stdout.writelines(line + "\n" for line in done.stderr.splitlines() if noise not in line)
        if done.returncode != 0:
            return done.returncode
        installed = json.loads(report.read_text())["install"]
    names = sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installed)
    key = [n for n in names if n.split("==")[0].lower() in
           ("catboost", "scikit-learn", "onnxruntime", "pandas", "pyarrow", "numpy")]
    print(f"  {len(names)} wheels for cp312 x86_64 (extras {', '.join(IMAGE_EXTRAS)}): "
          f"{', '.join(key)}")
    return 0


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def zip_functions(build_dir: Path) -> dict[str, tuple[Path, list[Path]]]:
    """Logical id -> (artifact directory, layer directories) of every built zip function."""
    build_dir = build_dir.resolve()
    built = load_template(build_dir / "template.yaml")
    out = {}
    for logical_id, props in functions(built).items():
        if props.get("PackageType") == "Image" or not (build_dir / logical_id).is_dir():
            continue
        layers = []
        for layer in props.get("Layers", []):
            layer_id = layer["Ref"] if isinstance(layer, dict) else layer
            layers.append(build_dir / layer_id)
        out[logical_id] = (build_dir / props["CodeUri"], layers)
    return out


def sizes(build_dir: Path) -> int:
    found = zip_functions(build_dir)
    if not found:
        print(f"  no zip function in {build_dir}")
        return 1
    layer_sizes = {p: tree_bytes(p) for _, layers in found.values() for p in layers}
    for layer, size in sorted(layer_sizes.items()):
        print(f"  layer {layer.name:28} {size / MB:7.1f} MB")
    over = []
    for logical_id, (code, layers) in sorted(found.items()):
        own = tree_bytes(code)
        total = own + sum(layer_sizes[p] for p in layers)
        flag = "OVER" if total > LIMIT_BYTES else "ok"
        print(f"  {logical_id:34} {own / MB:6.2f} MB + layers = {total / MB:7.1f} MB "
              f"of {LIMIT_BYTES / MB:.0f} MB  {flag}")
        if total > LIMIT_BYTES:
            over.append(logical_id)
    if over:
        print(f"  over Lambda's 250 MB unzipped limit: {', '.join(over)}")
        return 1
    return 0


def events_by_function() -> dict[str, list[Path]]:
    """Logical id -> the sample events (events/*.json) of the API routes it serves."""
    routes = {}
    for logical_id, props in functions(load_template(TEMPLATE)).items():
        for event in (props.get("Events") or {}).values():
            if event["Type"] == "Api":
                p = event["Properties"]
                routes[(p["Method"].upper(), p["Path"])] = logical_id
    out: dict[str, list[Path]] = {}
    for path in sorted((ROOT / "events").glob("*.json")):
        event = json.loads(path.read_text())
        owner = routes.get((event.get("httpMethod"), event.get("resource")))
        if owner:
            out.setdefault(owner, []).append(path)
    return out


def runtime_dir(tmp: Path) -> Path:
    """Links to the boto3 stack of this venv: what the Lambda runtime adds to sys.path."""
    import boto3

    site = Path(boto3.__file__).resolve().parents[1]
    runtime = tmp / "runtime"
    runtime.mkdir()
    for name in RUNTIME_PACKAGES:
        if (site / name).exists():
            (runtime / name).symlink_to(site / name)
    return runtime


SEED = """
from common import context
from common.demo import ensure_demo_models

print("  seeded demo models:", ", ".join(ensure_demo_models(context.lifecycle())))
context.reset()
"""


def seed_store(python: str, data_dir: Path) -> None:
    """Train and deploy the demo models into ``data_dir`` with the project's own venv."""
    env = {**os.environ, "MLFN_DATA_DIR": str(data_dir)}
    for key in list(env):
        if key.startswith("MLFN_") and key != "MLFN_DATA_DIR":
            env.pop(key)
    subprocess.run([python, "-c", SEED], cwd=ROOT, env=env, check=True)


def smoke(build_dir: Path, python: str, seed_python: str | None) -> int:
    found = zip_functions(build_dir)
    events = events_by_function()
    built = functions(load_template(build_dir / "template.yaml"))
    failed = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runtime = runtime_dir(tmp)
        seed = tmp / "seed"
        if seed_python:
            seed_store(seed_python, seed)
        else:
            seed.mkdir()
            print("  no seed (pass --seed PYTHON): the stores start empty")
        for logical_id, (code, layers) in sorted(found.items()):
            handler = built[logical_id]["Handler"]
            data_dir = tmp / f"data-{logical_id}"
            shutil.copytree(seed, data_dir)
            spec = {"name": handler.split(".")[1],
                    "paths": {"code": [str(code)] + [str(p / "python") for p in layers],
                              "runtime": [str(runtime)]},
                    "events": [str(p) for p in events.get(logical_id, [])],
                    "data_dir": str(data_dir)}
            spec_path = tmp / f"{logical_id}.json"
            spec_path.write_text(json.dumps(spec))
            print(f"  {logical_id} ({handler})")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp_name,
                   "LANG": "C.UTF-8", "AWS_DEFAULT_REGION": "us-east-1",
                   "PYTHONDONTWRITEBYTECODE": "1",  # read-only, as /var/task and /opt are
                   "PYDANTIC_DISABLE_PLUGINS": "__all__",  # as template.yaml's Globals
                   "POWERTOOLS_SERVICE_NAME": "mlfn", "POWERTOOLS_METRICS_NAMESPACE": "mlfn"}
            done = subprocess.run([python, "-S", str(Path(__file__).with_name("smoke_function.py")),
                                   str(spec_path)], env=env, capture_output=True, text=True)
            # The functions' own log lines (JSON, EMF) only when something went wrong.
            lines = done.stdout.splitlines()
            shown = lines if done.returncode else [ln for ln in lines if ln.startswith("    ")]
            print("\n".join(shown))
            if done.returncode != 0:
                sys.stdout.write(done.stderr[-3000:])
                failed.append(logical_id)
    if failed:
        print(f"  failed: {', '.join(failed)}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("image-functions", help="logical ids of the image functions")
    sub.add_parser("layer-requirements", help="the layer follows pyproject.toml")
    sub.add_parser("image-dependencies", help="the images' dependencies resolve")
    size = sub.add_parser("sizes", help="each zip function plus its layers, unzipped")
    size.add_argument("build_dir", type=Path)
    run = sub.add_parser("smoke", help="invoke each built zip function on its events")
    run.add_argument("build_dir", type=Path)
    run.add_argument("python", help="a Python 3.12 interpreter")
    run.add_argument("--seed", metavar="PYTHON",
                     help="the project's Python (with the train extra) to seed the demo models")
    args = parser.parse_args(argv)
    if args.command == "image-functions":
        return image_functions()
    if args.command == "layer-requirements":
        return layer_requirements()
    if args.command == "image-dependencies":
        return image_dependencies()
    if args.command == "sizes":
        return sizes(args.build_dir)
    return smoke(args.build_dir, args.python, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
