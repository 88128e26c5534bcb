"""Train: a form generated from the catalog (``GET /model_classes``), a tune switch and the deploy
policy; submit ``PUT /retrain`` and watch the experiment until it succeeds or fails."""

from __future__ import annotations

import math
import time

import streamlit as st

from ui import hyperparameters, session
from ui.client import DeployPolicy, Experiment

POLL_SECONDS = 0.5
WATCH_LIMIT_SECONDS = 1800
LAST_KEY = "mlfn_train_last"
POLICIES: dict[DeployPolicy, str] = {
    "never": "never: keep the current deployment",
    "if_better": "if better: deploy only if it beats the deployed experiment",
    "always": "always: deploy when it succeeds",
}

api = session.client()
st.title("Train")
model = session.require_model()
task = model["task"]
classes = [c for c in session.require("Reading the model classes", api.model_classes)
           if task in c.get("tasks", [task])]
if not classes:
    st.error(f"The API offers no model class for {task}.")
    st.stop()
if model.get("input") != "image" and not model.get("features"):
    st.warning(f"**{model['name']}** has no data yet: add a labelled file on the Data page first.")

names = [c["name"] for c in classes]
name = st.selectbox(f"Model class for **{model['name']}** ({task})", names, key="train_class")
spec = next(c for c in classes if c["name"] == name)
st.caption(spec.get("description", ""))
grid_of = spec.get("grid", {})
specs = hyperparameters.applicable(spec, task)

with st.form("train"):
    st.markdown("**Hyperparameters**")
    columns = st.columns(3)
    values = {}
    for i, hp in enumerate(specs):
        with columns[i % 3]:
            values[hp["name"]] = hyperparameters.widget(hp, grid_of, key=f"hp-{name}-{hp['name']}")
    grid = ", ".join(f"{k} ∈ {v}" for k, v in grid_of.items()).replace("None", "null")
    tune = st.toggle("Tune: 3-fold cross-validated grid search", key="train_tune",
                     help=f"Searches {grid}; hyperparameters outside the grid keep the values above.")
    left, right = st.columns(2)
    deploy: DeployPolicy = left.radio("Deploy", list(POLICIES), format_func=POLICIES.__getitem__,
                                      key="train_deploy")
    metrics = hyperparameters.METRICS[task]
    primary = right.selectbox("Primary metric (compares with the deployed experiment for 'if better')",
                              ["default", *metrics], key="train_metric",
                              format_func=lambda m: f"default ({metrics[0]})" if m == "default" else m)
    submitted = st.form_submit_button("Train", type="primary", icon=":material/play_arrow:")

if submitted:
    chosen = hyperparameters.changed(specs, values)
    queued = session.call("Queueing the training job", api.retrain, model["name"], name, chosen, tune,
                          deploy, None if primary == "default" else primary)
    if queued is not None:
        st.session_state[LAST_KEY] = {"model": model["name"], "experiment_id": queued["experiment_id"]}


def progress_of(experiment: Experiment, elapsed: float) -> float:
    """A progress estimate: training time is unknown, so running approaches 95 % asymptotically."""
    if experiment["status"] in ("succeeded", "failed"):
        return 1.0
    if experiment["status"] == "queued":
        return 0.05
    return 0.1 + 0.85 * (1 - math.exp(-elapsed / 30))


def watch(experiment_id: int) -> Experiment | None:
    """Poll ``GET /metrics/{id}`` with a progress bar until the experiment finishes."""
    bar = st.progress(0.0, text=f"Experiment #{experiment_id}: waiting for its status")
    start = time.monotonic()
    while True:
        experiment = session.call(f"Reading experiment #{experiment_id}", api.metrics, experiment_id)
        if experiment is None:
            return None
        elapsed = time.monotonic() - start
        status = experiment["status"]
        bar.progress(progress_of(experiment, elapsed),
                     text=f"Experiment #{experiment_id} ({experiment['model_class']}): {status}")
        if status in ("succeeded", "failed"):
            return experiment
        if elapsed > WATCH_LIMIT_SECONDS:
            st.info(f"Still {status} after {elapsed:.0f} s: follow it on the Experiments page.")
            return None
        time.sleep(POLL_SECONDS)


def show_result(experiment: Experiment) -> None:
    experiment_id = experiment["experiment_id"]
    if experiment["status"] == "failed":
        st.error(f"Experiment #{experiment_id} failed: {experiment.get('error') or 'no reason given'}")
        return
    current = session.call("Reading the models", api.list_models) or []
    deployed = next((m.get("deployed_experiment_id") for m in current if m["name"] == experiment["model"]),
                    None)
    note = "and is deployed" if deployed == experiment_id else f"(deployed: #{deployed})"
    st.success(f"Experiment #{experiment_id} ({experiment['model_class']}) succeeded {note}.")
    metrics = experiment.get("metrics") or {}
    for column, (metric, value) in zip(st.columns(max(len(metrics), 1)), metrics.items(), strict=False):
        column.metric(metric, f"{value:.4f}")
    st.caption(f"Hyperparameters: {experiment.get('hyperparameters')} · tune: {experiment.get('tune')} · "
               f"{experiment.get('rows')} rows of dataset version {experiment.get('dataset_version')}")


last = st.session_state.get(LAST_KEY)
if last and last["model"] == model["name"]:
    finished = watch(last["experiment_id"])
    if finished is not None:
        show_result(finished)
