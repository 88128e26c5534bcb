"""Every function invoked in-process on its committed event, the way `mlfn invoke` runs it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import context
from infra.local.cli import invoke
from tests.functions.test_inference_protocol import read_binary

ROOT = Path(__file__).resolve().parents[2]
EVENTS = sorted((ROOT / "events").glob("*.json"))
# The inference protocol's routes other than infer (events/inference.json) and their events.
INFERENCE_EVENTS = ("inference_binary", "inference_version", "inference_server", "inference_live",
                    "inference_ready", "inference_metadata", "inference_version_metadata",
                    "inference_model_ready", "inference_version_ready")
# Which function handles each event file (the file's stem, unless it names a second event).
FUNCTION = {"create_model": "models", "delete_experiment": "experiments", "forward_v2": "forward",
            "delete_model": "models", "delete_dataset_part": "datasets",
            "deploy_canary": "deploy", "end_canary": "rollouts", "end_shadow": "rollouts",
            "feedback": "rollouts", "live_metrics": "rollouts", "drift": "rollouts",
            **dict.fromkeys(INFERENCE_EVENTS, "inference"),
            "upload_status": "uploads", "complete_upload": "uploads", "upload_content": "uploads", "ingestion": "uploads",
            "add_data_upload": "add_data", "batch_job": "batch_jobs", "batch_result": "batch_jobs",
            "batch_jobs_list": "batch_jobs", "cancel_batch_job": "batch_jobs"}
# Events that undo another one, which is run first: the model events/create_model.json creates
# and the part events/add_data.json adds.
AFTER = {"delete_model": "create_model", "delete_dataset_part": "add_data"}
EXPECTED = {
    "add_data": 200, "artifacts": 200, "create_model": 201, "delete_experiment": 409,
    "datasets": 200, "delete_dataset_part": 200, "delete_model": 204,
    "deploy": 200, "deployments": 200, "evaluate": 200, "experiments": 200, "forward": 200,
    "forward_batch": 200, "forward_v2": 200, "health": 200, "inference": 200,
    "inference_log": 200, "metadata": 200, "metrics": 200, "model_classes": 200, "models": 200,
    "retrain": 202, **dict.fromkeys(INFERENCE_EVENTS, 200),
    # The demo iris model has one experiment, deployed: it cannot be its own canary, and there
    # is no canary or shadow to end.
    "deploy_canary": 409, "end_canary": 404, "end_shadow": 404, "rollouts": 200, "feedback": 200,
    "live_metrics": 200, "drift": 200,
    # An upload is announced; the other upload events name ids no store has.
    "uploads": 201, "upload_status": 404, "complete_upload": 404, "ingestion": 404, "upload_content": 404,
    "add_data_upload": 404,
    # Batch jobs of an upload no store has, and jobs no store has.
    "batch_jobs": 404, "batch_job": 404, "batch_result": 404, "cancel_batch_job": 404,
    "batch_jobs_list": 200,  # iris has none
}


@pytest.mark.parametrize("path", EVENTS, ids=[p.stem for p in EVENTS])
def test_function_answers_its_event(demo_env: Path, path: Path) -> None:
    event = json.loads(path.read_text())
    name = FUNCTION.get(path.stem, path.stem)
    if path.stem == "delete_experiment":
        # Experiment 1 is the deployed breast-cancer model: deleting it must be refused.
        assert context.backends().experiments.deployed_experiment("breast-cancer") == 1
    if path.stem in AFTER:
        first = AFTER[path.stem]
        done = invoke(FUNCTION.get(first, first), json.loads((ROOT / "events" / f"{first}.json").read_text()))
        assert done["statusCode"] == EXPECTED[first], done["body"][:500]
    out = invoke(name, event)
    if name in ("train_worker", "ingest_worker", "score_worker"):
        assert out == {"batchItemFailures": []}
        return
    body = base64.b64decode(out["body"]) if out.get("isBase64Encoded") else out["body"].encode()
    assert out["statusCode"] == EXPECTED[path.stem], body[:500]
    if path.stem.startswith("forward"):
        assert json.loads(body)["model"] == "iris"
    if path.stem in ("inference", "inference_version"):
        assert json.loads(body)["model_name"] == "iris"
    if path.stem == "delete_model":
        assert [m.name for m in context.backends().experiments.list_models()].count("churn") == 0
    if path.stem == "delete_dataset_part":
        assert json.loads(body)["parts"] == [1]  # the demo part is all that is left
    context.wait_for_jobs()


def test_the_binary_tensor_event_is_answered_in_binary(demo_env: Path) -> None:
    """tritonclient's default request (base64 through API Gateway, no Content-Type): a binary
    answer whose JSON header length is in Inference-Header-Content-Length, with the predictions
    of the same rows sent as JSON (events/inference.json)."""
    event = json.loads((ROOT / "events" / "inference_binary.json").read_text())
    assert event["isBase64Encoded"] is True
    assert not {"content-type", "accept"} & {k.lower() for k in event["headers"]}
    out = invoke(None, event)
    assert out["statusCode"] == 200, out["body"][:500]
    assert out["isBase64Encoded"] is True
    headers = {k.lower(): v for k, v in out["headers"].items()}
    assert headers["content-type"] == "application/octet-stream"
    body = base64.b64decode(out["body"])
    values = read_binary(body, headers)
    assert json.loads(body[:int(headers["inference-header-content-length"])])["model_name"] == "iris"
    assert values["label"] == ["setosa", "versicolor", "virginica"]

    as_json = invoke("inference", json.loads((ROOT / "events" / "inference.json").read_text()))
    expected = {o["name"]: o["data"] for o in json.loads(as_json["body"])["outputs"]}
    assert values["label"] == expected["label"]
    np.testing.assert_allclose(np.reshape(values["probabilities"], -1), expected["probabilities"],
                               rtol=1e-6)


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
