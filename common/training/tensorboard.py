"""TensorBoard event files for an experiment: what is meaningful for its model class.

Gradient boosting (CatBoost) gets its per-iteration learn and validation loss; a tuned
experiment gets the cross-validated score of every grid candidate; every experiment gets its
holdout metrics and hyperparameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_events(trained: Any, directory: Path, run_name: str) -> list[Path]:
    """Write the event file(s) for ``trained`` under ``directory``; returns the files written."""
    from tensorboardX import SummaryWriter

    directory.mkdir(parents=True, exist_ok=True)
    with SummaryWriter(logdir=str(directory), flush_secs=1, filename_suffix=f".{run_name}") as writer:
        for split, metrics in trained.learning_curves.items():
            for metric, values in metrics.items():
                for step, value in enumerate(values):
                    writer.add_scalar(f"loss/{metric}/{split}", value, step)
        for step, candidate in enumerate(trained.grid_scores):
            writer.add_scalar(f"grid/{candidate['scoring']}/mean", candidate["mean"], step)
            writer.add_scalar(f"grid/{candidate['scoring']}/std", candidate["std"], step)
            writer.add_text("grid/candidates", json.dumps(candidate["params"]), step)
        for name, value in trained.metrics.items():
            writer.add_scalar(f"holdout/{name}", value, 0)
        writer.add_text("hyperparameters", json.dumps(trained.hyperparameters), 0)
    return sorted(p for p in directory.rglob("*") if p.is_file())
