"""Rollout data for the Experiments page (pandas only): the deploy history with its canary and
shadow events, and the live metrics of each side as one table, the experiments side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pandas as pd

from ui.client import Deployment, HistoryRow, LiveMetrics, Rollout

# What the history filter offers, and which rows each choice keeps.
FAMILIES = ("deploys", "canary", "shadow")
HISTORY_COLUMNS = ["time", "event", "experiment_id", "previous", "detail"]
# Keys of an event that have their own column, or say nothing new (a canary's start time).
SILENT = frozenset({"event", "experiment_id", "at", "since", "model", "seq", "deployed_at"})
ROLE_ORDER = {"champion": 0, "canary": 1, "shadow": 2}
WINDOWS = ("since the rollout started", "last hour", "last 24 hours", "everything logged")


def event_of(row: HistoryRow) -> str:
    """A row's event; rows of servers from before rollouts have none and are deploys."""
    return str(row.get("event") or "deploy")


def family_of(row: HistoryRow) -> str:
    event = event_of(row)
    return "deploys" if event == "deploy" else event.split()[0]


def deploys(history: Sequence[HistoryRow]) -> list[Deployment]:
    """Only the deploys, newest first (the rollback target is the newest one's ``previous``)."""
    return [cast(Deployment, row) for row in history if event_of(row) == "deploy"]


def when(iso: str | None) -> str:
    """An API time as ``2026-01-02 03:04:05 UTC`` (the text itself when it is not ISO 8601)."""
    if not iso:
        return "—"
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def detail_of(row: HistoryRow) -> str:
    """What else an event says, in words: a canary's share and guard, a shadow's sample, why it
    ended; keys this UI does not know are shown as ``key=value``."""
    raw = cast(dict[str, Any], row)
    if event_of(row) == "deploy":
        return ""
    parts = []
    for key, value in raw.items():
        if key in SILENT or value is None:
            continue
        if key == "share":
            parts.append(f"{value:g}% of requests")
        elif key == "sample":
            parts.append(f"sample {value:g}%")
        elif key == "previous_sample":  # of a changed sample
            parts.append(f"was {value:g}%" if isinstance(value, int | float) else f"was {value}")
        elif key == "guard":
            parts.append("guard on" if value else "guard off")
        elif key == "reason":
            parts.append(str(value))
        else:
            parts.append(f"{key}={value}")
    return " · ".join(parts)


def history_frame(history: Sequence[HistoryRow], families: Iterable[str] = FAMILIES) -> pd.DataFrame:
    """One row per deploy or rollout event of the chosen families, newest first as given:
    time, event, experiment_id, previous (the experiment a deploy replaced), detail."""
    wanted = set(families)
    rows: list[dict[str, Any]] = []
    for row in history:
        if family_of(row) not in wanted:
            continue
        raw = cast(dict[str, Any], row)
        deploy = event_of(row) == "deploy"
        rows.append({
            "time": when(raw.get("deployed_at") if deploy else raw.get("at")),
            "event": event_of(row),
            "experiment_id": raw.get("experiment_id"),
            "previous": raw.get("previous") if deploy else None,
            "detail": detail_of(row),
        })
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def window_start(choice: str, rollout: Rollout | None, now: datetime | None = None) -> str | None:
    """The ``since`` of a live-metrics window (ISO 8601), None for everything logged."""
    now = now or datetime.now(UTC)
    if choice == "last hour":
        return (now - timedelta(hours=1)).isoformat()
    if choice == "last 24 hours":
        return (now - timedelta(days=1)).isoformat()
    if choice == "since the rollout started" and rollout is not None:
        starts = [since for side in (rollout["canary"], rollout["shadow"])
                  if side is not None and (since := side.get("since"))]
        return min(starts, key=lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))) if starts else None
    return None


def side_label(experiment_id: int, role: str) -> str:
    return f"#{experiment_id} {role}"


def live_frame(live: LiveMetrics) -> pd.DataFrame:
    """Measures as rows (requests, with outcome, p99 latency, then each metric), one column per
    experiment: champion, canary, shadow."""
    sides = sorted(live["experiments"], key=lambda e: (ROLE_ORDER.get(e["role"], 9), e["experiment_id"]))
    metrics = sorted({m for side in sides for m in (side.get("metrics") or {})})
    columns: dict[str, list[Any]] = {}
    for side in sides:
        values = side.get("metrics") or {}
        columns[side_label(side["experiment_id"], side["role"])] = [
            side["requests"], side["with_outcome"], side.get("p99_latency_ms"),
            *(values.get(m) for m in metrics)]
    index = ["requests", "with outcome", "p99 latency (ms)", *metrics]
    return pd.DataFrame(columns, index=pd.Index(index, name="measure"), dtype=float)
