"""The pipeline reproduces from a clean checkout: extract_data seeds an empty store with the demo
models (as the first `make serve` does) and leaves a store that has models alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common.errors import NotFound
from tests.pipeline.test_stages import stages_in

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"


def clean_env(tmp: Path) -> dict[str, str]:
    """The environment of a fresh shell with the venv active: no MLFN_* settings."""
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
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed: install the project's 'pipeline' extra")
def test_extract_data_in_a_fresh_clone_seeds_the_demo_models(tmp_path: Path) -> None:
    """`dvc repro extract_data` with the shipped params.yaml, in a clone with no .mlfn/ yet."""
    root = tmp_path / "clone"
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns(
        "__pycache__", "dvc_plots", "cache", "tmp", "config.local", "dvc.lock", "data", "model",
        "plots", "inference", "tensorboard", "metrics.json"))
    shutil.copytree(REPO / "common", root / "common", ignore=shutil.ignore_patterns("__pycache__"))
    assert not (root / ".mlfn").exists()
    env = clean_env(tmp_path)
    for args in (["git", "init", "-q"], ["git", "config", "user.name", "Clean Clone"],
                 ["git", "config", "user.email", "clone@example.invalid"],
                 ["git", "config", "commit.gpgsign", "false"],
                 ["git", "add", "-A"], ["git", "commit", "-q", "-m", "clone"]):
        assert run(args, root, env).returncode == 0, args

    done = run([str(DVC), "repro", "extract_data"], root / "pipeline", env)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "trained and deployed the demo models" in done.stdout + done.stderr

    info = json.loads((root / "pipeline" / "data" / "dataset.json").read_text())
    assert info["model"] == "iris" and info["dataset_version"] == 1 and info["rows"] == 150
    from common.backends import Backends
    from common.settings import Settings

    store = Backends.from_settings(Settings(data_dir=root / ".mlfn")).experiments
    deployed = {m.name: m.deployed_experiment_id for m in store.list_models()}
    assert set(deployed) == {"breast-cancer", "iris", "diabetes", "wine", "digits"}
    assert all(deployed.values()), deployed  # the store `make serve` would have made


def params_for(tmp_path: Path, store: Path, **store_settings: object) -> Path:
    params = yaml.safe_load((REPO / "pipeline" / "params.yaml").read_text())
    params["store"] = {"data_dir": str(store), **store_settings}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_a_store_with_models_is_not_seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.backends import Backends
    from common.lifecycle import Lifecycle
    from common.serving import Serving
    from common.settings import Settings

    for key in [k for k in os.environ if k.startswith("MLFN_")]:
        monkeypatch.delenv(key)
    store = tmp_path / "store"
    backends = Backends.from_settings(Settings(data_dir=store))
    Lifecycle(backends, Serving(backends)).create_model(
        {"name": "churn", "task": "classification", "target": "churned"})
    stages = stages_in(tmp_path)
    with pytest.raises(NotFound, match="model 'iris' does not exist: create it"):
        stages.extract_data(stages.load_params(params_for(tmp_path, store)))
    assert [m.name for m in backends.experiments.list_models()] == ["churn"]


def test_seeding_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MLFN_")]:
        monkeypatch.delenv(key)
    stages = stages_in(tmp_path)
    params = stages.load_params(params_for(tmp_path, tmp_path / "store", demo_models=False))
    with pytest.raises(NotFound, match="model 'iris' does not exist"):
        stages.extract_data(params)
    assert stages.open_backends(params).experiments.list_models() == []
