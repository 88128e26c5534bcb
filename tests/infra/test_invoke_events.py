"""Every function invoked in-process on its committed event, the way `mlfn invoke` runs it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common import context
from infra.local.cli import invoke

ROOT = Path(__file__).resolve().parents[2]
EVENTS = sorted((ROOT / "events").glob("*.json"))
# Which function handles each event file (the file's stem, unless it names a second event).
FUNCTION = {"create_model": "models", "delete_experiment": "experiments", "forward_v2": "forward"}
EXPECTED = {
    "add_data": 200, "artifacts": 200, "create_model": 201, "delete_experiment": 409,
    "deploy": 200, "deployments": 200, "evaluate": 200, "experiments": 200, "forward": 200,
    "forward_batch": 200, "forward_v2": 200, "health": 200, "inference_log": 200, "metadata": 200,
    "metrics": 200, "model_classes": 200, "models": 200, "retrain": 202,
}


@pytest.mark.parametrize("path", EVENTS, ids=[p.stem for p in EVENTS])
def test_function_answers_its_event(demo_env: Path, path: Path) -> None:
    event = json.loads(path.read_text())
    name = FUNCTION.get(path.stem, path.stem)
    if path.stem == "delete_experiment":
        # Experiment 1 is the deployed breast-cancer model: deleting it must be refused.
        assert context.backends().experiments.deployed_experiment("breast-cancer") == 1
    out = invoke(name, event)
    if name == "train_worker":
        assert out == {"batchItemFailures": []}
        return
    body = base64.b64decode(out["body"]) if out.get("isBase64Encoded") else out["body"].encode()
    assert out["statusCode"] == EXPECTED[path.stem], body[:500]
    if path.stem.startswith("forward"):
        assert json.loads(body)["model"] == "iris"
    context.wait_for_jobs()


def test_mlfn_invoke_command(demo_env: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "infra.local.cli", "invoke", "forward", "--event", "events/forward.json",
         "--data-dir", str(demo_env)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["statusCode"] == 200
    assert json.loads(reply["body"])["prediction"] in ("setosa", "versicolor", "virginica")


@pytest.mark.parametrize("path", EVENTS, ids=[p.stem for p in EVENTS])
def test_the_event_names_its_function(path: Path) -> None:
    from infra.local.cli import function_for

    assert function_for(json.loads(path.read_text())) == FUNCTION.get(path.stem, path.stem)


def test_mlfn_invoke_without_a_name_or_with_a_wrong_one(demo_env: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infra.local.cli", "invoke", *args,
                               "--data-dir", str(demo_env)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    out = run("--event", "events/create_model.json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["statusCode"] == 201
    out = run("create_model", "--event", "events/create_model.json")
    assert out.returncode != 0
    assert "unknown function 'create_model'" in out.stderr
    assert "this event is for 'models' (mlfn invoke models --event ...)" in out.stderr


def test_mlfn_invoke_retrain_trains_before_it_exits(demo_env: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "infra.local.cli", "invoke", "--event", "events/retrain.json",
         "--data-dir", str(demo_env)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    experiment_id = json.loads(json.loads(out.stdout)["body"])["experiment_id"]
    context.reset()
    done = context.backends().experiments.get_experiment(experiment_id)
    assert done.status.value == "succeeded", done.error
