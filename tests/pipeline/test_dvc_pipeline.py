"""`dvc repro` on a small dataset in a temporary git repository, and every artefact it leaves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"
ITERATIONS = 40

pytestmark = pytest.mark.skipif(
    not DVC.exists(), reason="dvc is not installed: install the project's 'pipeline' extra"
)


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A git repository holding pipeline/ and common/, an embedded store with the iris model
    (two uploads: dataset version 2), and one `dvc repro` with registration on."""
    from common.backends import Backends
    from common.demo import iris
    from common.lifecycle import Lifecycle
    from common.serving import Serving
    from common.settings import Settings

    tmp = tmp_path_factory.mktemp("dvc")
    root, store = tmp / "repo", tmp / "store"
    ignore = shutil.ignore_patterns("__pycache__", "dvc_plots", "cache", "tmp", "config.local", "dvc.lock",
                                    "data", "model", "plots", "inference", "tensorboard", "metrics.json")
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=ignore)
    shutil.copytree(REPO / "common", root / "common", ignore=shutil.ignore_patterns("__pycache__"))

    backends = Backends.from_settings(Settings(data_dir=store))
    lifecycle = Lifecycle(backends, Serving(backends))
    lifecycle.create_model({"name": "iris", "task": "classification", "target": "species"})
    frame = iris()
    lifecycle.add_frame("iris", frame.iloc[::2])
    lifecycle.add_frame("iris", frame.iloc[1::2])

    params_path = root / "pipeline" / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["store"]["data_dir"] = str(store)
    params["train"]["model_class"] = "catboost"
    params["train"]["hyperparameters"]["catboost"] = {"iterations": ITERATIONS, "depth": 4}
    params["register"] = True
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFN_", "DVC_", "GIT_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        DVC_STUDIO_OFFLINE="1",
        DVC_SITE_CACHE_DIR=str(tmp / "dvc-site-cache"),
        DVC_GLOBAL_CONFIG_DIR=str(tmp / "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=str(tmp / "dvc-system"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    for args in (["git", "init", "-q"], ["git", "config", "user.name", "Pipeline Test"],
                 ["git", "config", "user.email", "pipeline@example.invalid"],
                 ["git", "config", "commit.gpgsign", "false"],
                 ["git", "add", "-A"], ["git", "commit", "-q", "-m", "pipeline"]):
        run(args, root, env)
    pipeline = root / "pipeline"
    repro = run([str(DVC), "repro"], pipeline, env)
    return {"root": root, "pipeline": pipeline, "store": store, "env": env, "backends": backends,
            "lifecycle": lifecycle, "repro": repro}


def test_repro_runs_every_stage(project: dict) -> None:
    for stage in ("extract_data", "train_model", "inference_model"):
        assert f"Running stage '{stage}'" in project["repro"]
    lock = yaml.safe_load((project["pipeline"] / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"extract_data", "train_model", "inference_model"}


def test_extract_data_records_the_dataset_version(project: dict) -> None:
    pipeline = project["pipeline"]
    info = json.loads((pipeline / "data" / "dataset.json").read_text())
    assert info["model"] == "iris" and info["dataset_version"] == 2 and info["rows"] == 150
    assert [p["version"] for p in info["parts"]] == [1, 2]
    assert len(pd.read_parquet(pipeline / "data" / "dataset.parquet")) == 150


def test_model_is_onnx_with_provenance(project: dict) -> None:
    from common.inference.onnx_model import OnnxModel

    pipeline = project["pipeline"]
    summary = json.loads((pipeline / "model" / "model.json").read_text())
    model = OnnxModel((pipeline / "model" / "model.onnx").read_bytes())
    meta = model.metadata
    head = run(["git", "rev-parse", "HEAD"], project["root"], project["env"]).strip()
    assert meta["model"] == "iris" and meta["model_class"] == "catboost"
    assert meta["experiment_id"] == summary["experiment_id"] == summary["registered"]["experiment_id"]
    assert meta["dataset_version"] == 2 and meta["trained_by"] == "dvc pipeline"
    assert meta["commit"] == head  # the code that trained is the repository's
    assert meta["hyperparameters"]["iterations"] == ITERATIONS
    assert meta["parity"]["max_proba_diff"] <= 1e-4
    assert [f["name"] for f in meta["features"]] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    out = model.predict([{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}])
    assert out.predictions == ["setosa"]


def test_metrics_of_training_and_inference_agree(project: dict) -> None:
    pipeline = project["pipeline"]
    train = json.loads((pipeline / "metrics.json").read_text())
    served = json.loads((pipeline / "inference" / "metrics.json").read_text())
    assert set(train) == {"accuracy", "f1_macro", "precision_macro", "recall_macro", "log_loss", "roc_auc"}
    assert served["rows"] == 30
    for name, value in train.items():
        assert served[name] == pytest.approx(value, abs=1e-9), name
    predictions = pd.read_csv(pipeline / "inference" / "predictions.csv")
    assert len(predictions) == 30
    assert {"dataset_row", "species", "prediction", "probability_setosa"} <= set(predictions.columns)
    assert (predictions["prediction"] == predictions["species"]).mean() == pytest.approx(train["accuracy"])


def test_plots_are_pngs_and_dvc_data(project: dict) -> None:
    from PIL import Image

    pipeline = project["pipeline"]
    names = {"learning_curves", "confusion_matrix", "roc", "precision_recall", "feature_importance"}
    for name in names:
        with Image.open(pipeline / "plots" / "images" / f"{name}.png") as image:
            assert image.format == "PNG"
            image.load()
            assert image.width > 200 and image.height > 200
    definitions = yaml.safe_load((pipeline / "plots" / "dvc.yaml").read_text())["plots"]
    assert {next(iter(d)) for d in definitions} == names
    for definition in definitions:
        for path in next(iter(definition.values()))["y"]:
            assert len(pd.read_csv(pipeline / "plots" / path)) > 0, path
    curves = pd.read_csv(pipeline / "plots" / "data" / "learning_curves.csv")
    assert list(curves.columns) == ["iteration", "learn_MultiClass", "validation_MultiClass"]
    assert len(curves) == ITERATIONS
    importance = pd.read_csv(pipeline / "plots" / "data" / "feature_importance.csv")
    assert set(importance["feature"]) == {"sepal_length", "sepal_width", "petal_length", "petal_width"}
    assert importance["importance"].sum() == pytest.approx(1.0)

    shown = json.loads(run([str(DVC), "plots", "show", "--json"], pipeline, project["env"]))
    assert not shown.get("errors"), shown["errors"]
    assert names <= set(shown["data"])
    assert {f"plots/images/{n}.png" for n in names} <= set(shown["data"])
    assert shown["data"]["roc"][0]["type"] == "vega"


def test_tensorboard_events_hold_the_loss_curve(project: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = json.loads((project["pipeline"] / "model" / "model.json").read_text())
    (event_file,) = summary["tensorboard"]
    events = EventAccumulator(str((project["pipeline"] / event_file).parent))
    events.Reload()
    tags = events.Tags()["scalars"]
    for split in ("learn", "validation"):
        curve = events.Scalars(f"loss/MultiClass/{split}")
        assert [e.step for e in curve] == list(range(ITERATIONS))
        assert curve[-1].value < curve[0].value
    assert "holdout/f1_macro" in tags


def test_dvc_metrics_and_params(project: dict) -> None:
    pipeline, env = project["pipeline"], project["env"]
    shown = json.loads(run([str(DVC), "metrics", "show", "--json"], pipeline, env))
    files = next(iter(shown.values()))["data"]
    assert files["metrics.json"]["data"]["f1_macro"] > 0.8
    assert files["inference/metrics.json"]["data"]["rows"] == 30

    run(["git", "add", "-A"], project["root"], env)
    run(["git", "commit", "-q", "-m", "repro"], project["root"], env)
    params = (pipeline / "params.yaml").read_text()
    (pipeline / "params.yaml").write_text(params.replace("seed: 42", "seed: 7"))
    try:
        diff = json.loads(run([str(DVC), "params", "diff", "--json"], pipeline, env))
        change = diff["params.yaml"]["train.seed"]
        assert (change["old"], change["new"]) == (42, 7)
    finally:
        (pipeline / "params.yaml").write_text(params)


def test_unchanged_data_reruns_nothing_and_pushes_offline(project: dict) -> None:
    pipeline, env = project["pipeline"], project["env"]
    before = len(project["backends"].experiments.list_experiments("iris"))
    again = run([str(DVC), "repro"], pipeline, env)
    assert "Running stage 'extract_data'" in again  # the store cannot be hashed: always checked
    assert "Stage 'train_model' didn't change, skipping" in again
    assert "Stage 'inference_model' didn't change, skipping" in again
    assert len(project["backends"].experiments.list_experiments("iris")) == before
    run([str(DVC), "push"], pipeline, env)
    assert any((project["root"] / ".mlfn" / "dvc-remote").rglob("*"))


def test_registered_experiment_is_the_services(project: dict) -> None:
    from common.domain import ExperimentStatus
    from common.names import artifact_prefix, model_key

    backends, lifecycle = project["backends"], project["lifecycle"]
    summary = json.loads((project["pipeline"] / "model" / "model.json").read_text())
    experiment_id = summary["registered"]["experiment_id"]
    exp = backends.experiments.get_experiment(experiment_id)
    assert exp.status is ExperimentStatus.succeeded and exp.model == "iris"
    assert exp.model_class == "catboost" and exp.dataset_version == 2 and exp.rows == 150
    assert exp.metrics == pytest.approx(json.loads((project["pipeline"] / "metrics.json").read_text()))
    assert exp.artifact_key == model_key("iris", experiment_id)
    assert backends.models.get(exp.artifact_key) == (project["pipeline"] / "model" / "model.onnx").read_bytes()
    tensorboard = backends.models.list(artifact_prefix("iris", experiment_id) + "tensorboard/")
    assert tensorboard == summary["registered"]["artifacts"] and len(tensorboard) == 1

    run([sys.executable, "-m", "pipeline.stages", "deploy"], project["root"], project["env"])
    assert backends.experiments.deployed_experiment("iris") == experiment_id
    answer = lifecycle.serving.forward(
        "iris", {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
    )
    assert answer["experiment_id"] == experiment_id and answer["prediction"] == "virginica"
    assert lifecycle.deploy(experiment_id)["deployed"] == experiment_id
