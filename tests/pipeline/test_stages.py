"""pipeline/stages.py without DVC: parameter checks and a registration whose training fails."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from common.errors import BadRequest

REPO = Path(__file__).resolve().parents[2]


def stages_in(tmp_path: Path) -> ModuleType:
    """pipeline/stages.py copied under ``tmp_path``, so that its outputs land there."""
    (tmp_path / "pipeline").mkdir()
    for name in ("stages.py", "params.yaml"):
        shutil.copy(REPO / "pipeline" / name, tmp_path / "pipeline" / name)
    spec = importlib.util.spec_from_file_location("pipeline_stages_copy", tmp_path / "pipeline" / "stages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_shipped_params_are_valid() -> None:
    from pipeline.stages import load_params

    params = load_params(REPO / "pipeline" / "params.yaml")
    assert params.model == "iris" and params.dataset_version is None and params.register is False
    assert params.model_class == "catboost" and params.store["data_dir"] == ".mlfn"
    assert params.hyperparameters == {"iterations": 300, "learning_rate": 0.1, "depth": 6}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modle": "iris"}, "unknown parameter 'modle'"),
        ({"dataset_version": 0}, "dataset_version"),
        ({"train": {"model_class": "xgboost"}}, "xgboost"),
        ({"train": {"model_class": "svm", "tune": "yes"}}, "tune"),
        ({"model": "Bad Name"}, "invalid model name"),
        ({"train": {"model_class": "svm", "hyperparameters": {"random_forrest": {}}}}, "random_forrest"),
        ({"train": {"model_class": "svm", "hyperparameters": {"svm": 3}}}, "map model classes"),
    ],
)
def test_params_are_checked(tmp_path: Path, change: dict, message: str) -> None:
    from pipeline.stages import load_params

    params = yaml.safe_load((REPO / "pipeline" / "params.yaml").read_text())
    params.update(change)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(BadRequest, match=message):
        load_params(path)


def test_failed_training_fails_the_registered_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.backends import Backends
    from common.demo import iris
    from common.domain import ExperimentStatus
    from common.lifecycle import Lifecycle
    from common.serving import Serving
    from common.settings import Settings
    from common.training import trainer

    stages = stages_in(tmp_path)
    store = tmp_path / "store"
    backends = Backends.from_settings(Settings(data_dir=store))
    lifecycle = Lifecycle(backends, Serving(backends))
    lifecycle.create_model({"name": "iris", "task": "classification", "target": "species"})
    lifecycle.add_frame("iris", iris())
    params = stages.load_params(stages.PARAMS)
    params = replace(params, store={"data_dir": str(store)}, register=True)
    stages.extract_data(params)

    def broken(frame: object, spec: trainer.TrainingSpec) -> None:
        raise BadRequest(f"no luck for experiment {spec.experiment_id}")

    monkeypatch.setattr(trainer, "train", broken)
    with pytest.raises(BadRequest):
        stages.train_model(params)
    (exp,) = backends.experiments.list_experiments("iris")
    assert exp.status is ExperimentStatus.failed and exp.error == f"no luck for experiment {exp.id}"
    assert backends.models.list("iris/") == []
    assert not stages.MODEL_INFO.exists()
