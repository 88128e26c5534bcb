"""Drift for the Monitor page (pandas only): ``GET /drift``'s features as a table, and its windows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from ui.client import Drift

COLUMNS = ["feature", "kind", "psi", "drifted", "missing_train", "missing_served"]
# The API's default window is the last 24 hours: that choice sends no ``since``.
WINDOWS = {"last 24 hours": None, "last hour": timedelta(hours=1), "last 7 days": timedelta(days=7)}


def since_of(choice: str, now: datetime | None = None) -> str | None:
    span = WINDOWS.get(choice)
    return None if span is None else ((now or datetime.now(UTC)) - span).isoformat()


def frame_of(drift: Drift) -> pd.DataFrame:
    """One row per feature, largest PSI first as the API sorts them (no PSI: not served yet)."""
    rows = [{"feature": f["name"], "kind": f["kind"], "psi": f.get("psi"), "drifted": bool(f.get("drifted")),
             "missing_train": f.get("missing_train"), "missing_served": f.get("missing_served")}
            for f in drift["features"]]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("psi", "missing_train", "missing_served"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def enough_rows(drift: Drift) -> bool:
    """Whether the window holds enough served rows for a feature to be called drifted."""
    return drift["rows"] >= drift["min_rows"]
