"""The training form, generated from ``GET /model_classes``: one widget per hyperparameter with its
type, default and range or choices; the request carries only what differs from the defaults."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import streamlit as st

from ui.client import Hyperparameter, ModelClass

METRICS = {
    "classification": ["f1_macro", "accuracy", "precision_macro", "recall_macro", "roc_auc", "log_loss"],
    "regression": ["mae", "rmse", "r2"],
}


def applicable(model_class: ModelClass, task: str) -> list[Hyperparameter]:
    return [h for h in model_class["hyperparameters"] if task in h.get("tasks", [task])]


def describe(spec: Hyperparameter, grid: Mapping[str, list[Any]]) -> str:
    """The help text: type, default, range or choices, the tuning grid and the catalog's note."""
    parts = [f"type {spec['type']}", f"default {spec['default']!r}".replace("None", "null")]
    if "minimum" in spec or "maximum" in spec:
        parts.append(f"range [{spec.get('minimum', '-∞')}, {spec.get('maximum', '∞')}]")
    if spec.get("choices"):
        parts.append(f"choices {', '.join(map(str, spec['choices']))}")
    if spec.get("nullable"):
        parts.append("empty = null")
    if spec["name"] in grid:
        parts.append(f"tuning grid {grid[spec['name']]}".replace("None", "null"))
    text = "; ".join(parts)
    return f"{text}. {spec['doc']}" if spec.get("doc") else text


def widget(spec: Hyperparameter, grid: Mapping[str, list[Any]], key: str) -> Any:
    """One input for one hyperparameter; returns its value (None for an empty nullable field)."""
    label, kind, default = spec["name"], spec["type"], spec.get("default")
    helptext = describe(spec, grid)
    if kind == "int":
        return st.number_input(
            label, min_value=_bound(spec, "minimum", int), max_value=_bound(spec, "maximum", int),
            value=None if default is None else int(default), step=1, help=helptext, key=key,
            placeholder="null" if spec.get("nullable") else None,
        )
    if kind == "float":
        return st.number_input(
            label, min_value=_bound(spec, "minimum", float), max_value=_bound(spec, "maximum", float),
            value=None if default is None else float(default), step=_step(default), help=helptext,
            key=key, format="%g",
            placeholder="null" if spec.get("nullable") else None,
        )
    if kind == "choice":
        choices = list(spec.get("choices") or [default])
        index = choices.index(default) if default in choices else 0
        return st.selectbox(label, choices, index=index, help=helptext, key=key,
                            format_func=lambda c: "null" if c is None else str(c))
    if kind == "bool":
        return st.checkbox(label, value=bool(default), help=helptext, key=key)
    text = st.text_input(label, value="" if default is None else str(default), help=helptext, key=key)
    return text or None


def _step(default: Any) -> float:
    """A tenth of the default's order of magnitude: 1.0 steps by 0.1, 0.05 by 0.001."""
    if not isinstance(default, int | float) or default == 0:
        return 0.01
    return float(10 ** (math.floor(math.log10(abs(default))) - 1))


def _bound(spec: Hyperparameter, name: str, cast: type) -> Any:
    value = spec.get(name)
    return None if value is None else cast(value)


def changed(specs: list[Hyperparameter], values: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters whose value differs from the catalog default (the rest stay implicit,
    so that with ``tune`` the grid decides them)."""
    out = {}
    for spec in specs:
        value = values.get(spec["name"])
        if value is None and not spec.get("nullable"):
            continue  # an emptied required field: keep the default
        if value != spec.get("default"):
            out[spec["name"]] = value
    return out
