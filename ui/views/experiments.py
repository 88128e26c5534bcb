"""Experiments: the chosen model's experiments with their metrics, a chart comparing one metric,
the deploy history, and deploy / roll back."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui import hyperparameters, plots, session
from ui.client import Deployment, Experiment

api = session.client()
st.title("Experiments")
model = session.require_model()
name = model["name"]
deployed = model.get("deployed_experiment_id")


def table_of(experiments: list[Experiment]) -> pd.DataFrame:
    rows = []
    for e in experiments:
        row: dict[str, Any] = {
            "experiment_id": e["experiment_id"],
            "status": e["status"],
            "deployed": e["experiment_id"] == deployed,
            "model_class": e["model_class"],
            "tune": e.get("tune"),
            "deploy policy": e.get("deploy"),
            "hyperparameters": ", ".join(f"{k}={v}" for k, v in (e.get("hyperparameters") or {}).items()),
        }
        row.update(e.get("metrics") or {})
        row.update({
            "dataset version": e.get("dataset_version"),
            "rows": e.get("rows"),
            "created": e.get("created_at"),
            "finished": e.get("finished_at"),
            "error": e.get("error"),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def deploy_controls(experiments: list[Experiment], history: list[Deployment]) -> None:
    st.subheader("Deploy or roll back")
    candidates = [e["experiment_id"] for e in experiments
                  if e["status"] == "succeeded" and e["experiment_id"] != deployed]
    left, right = st.columns(2)
    with left:
        if candidates:
            target = st.selectbox("Succeeded experiment", candidates, key=f"deploy-{name}",
                                  format_func=lambda i: f"#{i}")
            if st.button(f"Deploy #{target}", type="primary", icon=":material/rocket_launch:"):
                deploy(target)
        else:
            st.caption("No other succeeded experiment to deploy.")
    with right:
        previous = history[0]["previous"] if history else None
        if previous is not None:
            st.write(f"Deployed now: #{deployed}; before it: #{previous}.")
            if st.button(f"Roll back to #{previous}", icon=":material/undo:"):
                deploy(previous)
        else:
            st.caption("Nothing to roll back to.")


def deploy(experiment_id: int) -> None:
    answer = session.call(f"Deploying experiment #{experiment_id}", api.deploy, experiment_id)
    if answer is not None:
        session.flash(f"Deployed #{answer['deployed']} for **{answer['model']}** "
                      f"(previously #{answer.get('previous')}).")
        st.rerun()


status = st.segmented_control("Status", ["all", "succeeded", "failed", "queued", "running"],
                              default="all", key="experiments_status") or "all"
everything = session.require("Listing experiments", api.experiments, name)
experiments = [e for e in everything if status == "all" or e["status"] == status]
history = session.call("Reading the deploy history", api.deployments, name) or []

if any(e["status"] in ("queued", "running") for e in everything):
    st.info("Some experiments are still training.")
    st.button("Refresh", icon=":material/refresh:")
if not experiments:
    st.info(f"No {'' if status == 'all' else status + ' '}experiments for **{name}**: "
            "train one on the Train page.")
else:
    table = table_of(experiments)
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"experiment_id": st.column_config.NumberColumn("id", format="#%d")})
    known = {k for e in experiments for k in (e.get("metrics") or {})}
    metric_names = [m for m in table.columns if m in known]
    if metric_names:
        preferred = hyperparameters.METRICS[model["task"]][0]
        metric = st.selectbox("Compare", metric_names, key="experiments_metric",
                              index=metric_names.index(preferred) if preferred in metric_names else 0)
        st.plotly_chart(plots.metric_comparison(table, metric, deployed), width="stretch")
deploy_controls(everything, history)

st.subheader("Deploy history")
if history:
    st.dataframe(pd.DataFrame(history), hide_index=True, width="stretch")
else:
    st.caption("Nothing deployed yet.")
