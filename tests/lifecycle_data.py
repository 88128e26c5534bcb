"""Labelled data for the life-cycle tests: churn with numeric and categorical features."""

from __future__ import annotations

import csv
import io

import numpy as np


def churn_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        tenure = float(rng.integers(1, 72))
        charges = float(np.round(rng.uniform(20, 120), 2))
        plan = str(rng.choice(["basic", "plus", "premium"]))
        region = str(rng.choice(["north", "south"]))
        score = -0.05 * tenure + 0.03 * charges + {"basic": 0.8, "plus": 0.0, "premium": -0.8}[plan]
        rows.append({"tenure": tenure, "charges": charges, "plan": plan, "region": region,
                     "churned": "yes" if score + rng.normal(scale=0.3) > 0.6 else "no"})
    return rows


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
