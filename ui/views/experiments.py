"""Experiments: the chosen model's experiments with their metrics, a chart comparing one metric,
deploy / roll back, the rollout (canary and shadow: their state, start and end, live metrics side
by side) and the deploy history with its rollout events."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui import hyperparameters, plots, rollouts, session
from ui.client import ApiError, Experiment, HistoryRow, Rollout

api = session.client()
st.title("Experiments")
model = session.require_model()
name = model["name"]
deployed = model.get("deployed_experiment_id")


def roles_of(state: Rollout | None) -> dict[int, str]:
    """What the canary and the shadow are, by experiment id."""
    roles = {}
    if state and state["canary"]:
        roles[state["canary"]["experiment_id"]] = f"canary {state['canary']['share']:g}%"
    if state and state["shadow"]:
        roles[state["shadow"]["experiment_id"]] = "shadow"
    return roles


def table_of(experiments: list[Experiment], roles: dict[int, str]) -> pd.DataFrame:
    rows = []
    for e in experiments:
        row: dict[str, Any] = {
            "experiment_id": e["experiment_id"],
            "status": e["status"],
            "deployed": e["experiment_id"] == deployed,
            "rollout": roles.get(e["experiment_id"], ""),
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


def deploy_controls(experiments: list[Experiment], history: list[HistoryRow]) -> None:
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
        latest = rollouts.deploys(history)[:1]  # canary and shadow events sit between deploys
        previous = latest[0]["previous"] if latest else None
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


def side_caption(label: str, experiment_id: int, details: str) -> None:
    st.markdown(f"**{label}:** #{experiment_id}" + (f" · {details}" if details else ""))


def sampled(sample: float) -> str:
    return "every request" if sample >= 100 else f"{sample:g}% of requests"


def rollout_state(state: Rollout) -> None:
    champion, canary_col, shadow_col = st.columns(3)
    with champion:
        st.markdown(f"**Champion:** #{state['deployed']}" if state["deployed"] is not None
                    else "**Champion:** nothing deployed")
        if state["deployed"] is not None:
            st.caption("answers the requests the canary does not" if state["canary"]
                       else "answers every request")
    with canary_col:
        canary = state["canary"]
        if canary is None:
            st.markdown("**Canary:** none")
        else:
            guard = "guard on" if canary["guard"] else "guard off"
            side_caption("Canary", canary["experiment_id"], f"{canary['share']:g}% of requests · {guard}")
            st.caption(f"since {rollouts.when(canary['since'])}")
            ours = canary["experiment_id"]
            if st.button(f"Promote #{ours}", key=f"promote-{name}", icon=":material/rocket_launch:",
                         help="deploy it: it answers every request, and the canary ends"):
                deploy(ours)
            if st.button(f"End canary #{ours}", key=f"end-canary-{name}", icon=":material/stop_circle:"):
                change(f"Ending canary #{ours}", f"Ended canary #{ours}: #{state['deployed']} answers "
                       "every request again.", api.end_canary, name)
    with shadow_col:
        shadow = state["shadow"]
        if shadow is None:
            st.markdown("**Shadow:** none")
        else:
            side_caption("Shadow", shadow["experiment_id"], f"scores {sampled(shadow.get('sample', 100))}")
            st.caption(f"since {rollouts.when(shadow['since'])}")
            if st.button(f"End shadow #{shadow['experiment_id']}", key=f"end-shadow-{name}",
                         icon=":material/stop_circle:"):
                change(f"Ending shadow #{shadow['experiment_id']}",
                       f"Ended shadow #{shadow['experiment_id']}.", api.end_shadow, name)


def change(action: str, done: str, fn: Any, *args: Any) -> None:
    """One rollout change; on success ``done`` is shown and the new state read on the rerun."""
    if session.call(action, fn, *args) is not None:
        session.flash(done)
        st.rerun()


def rollout_controls(experiments: list[Experiment], state: Rollout) -> None:
    canary_id = state["canary"]["experiment_id"] if state["canary"] else None
    shadow_id = state["shadow"]["experiment_id"] if state["shadow"] else None
    succeeded = [e["experiment_id"] for e in experiments if e["status"] == "succeeded"
                 and e["experiment_id"] != state["deployed"]]
    if state["deployed"] is None:
        st.caption("Deploy an experiment first: a canary or a shadow runs beside the champion.")
        return
    left, right = st.columns(2)
    with left:
        st.markdown("**Start a canary**")
        options = [i for i in succeeded if i != shadow_id]
        if options:
            target = st.selectbox("Canary experiment", options, key=f"canary-target-{name}",
                                  format_func=lambda i: f"#{i}")
            if target == canary_id:
                st.caption(f"#{target} is the canary: starting it again changes its share and guard.")
            share = st.slider("Share of requests (%)", 1, 99, 10, key=f"canary-share-{name}")
            guard = st.toggle("Guard: end it when it does worse than the champion",
                              key=f"canary-guard-{name}")
            if st.button(f"Start canary #{target} at {share}%", icon=":material/call_split:"):
                change(f"Starting canary #{target}",
                       f"Canary #{target} answers {share}% of the requests"
                       + (", guarded." if guard else "."), api.start_canary, target, name, share, guard)
        else:
            st.caption("No other succeeded experiment to try as a canary.")
    with right:
        st.markdown("**Start a shadow**")
        options = [i for i in succeeded if i != canary_id]
        if options:
            target = st.selectbox("Shadow experiment", options, key=f"shadow-target-{name}",
                                  format_func=lambda i: f"#{i}")
            if target == shadow_id:
                st.caption(f"#{target} is the shadow: starting it again changes its sample.")
            sample = st.slider("Sample of requests (%)", 1, 100, 100, key=f"shadow-sample-{name}")
            st.caption("It scores the requests after they are answered (chosen by request id); "
                       "its answers are only logged.")
            if st.button(f"Start shadow #{target} on {sample}%", icon=":material/visibility:"):
                change(f"Starting shadow #{target}",
                       f"Shadow #{target} scores {sampled(sample)}.",
                       api.start_shadow, target, name, sample)
        else:
            st.caption("No other succeeded experiment to run as a shadow.")


def live_metrics(state: Rollout) -> None:
    st.markdown("**Live metrics**")
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    window = left.selectbox("Window", rollouts.WINDOWS, key=f"live-window-{name}")
    right.button("Refresh", key=f"live-refresh-{name}", icon=":material/refresh:")
    since = rollouts.window_start(window, state)
    try:
        live = api.live_metrics(name, since)
    except ApiError as exc:
        if exc.status == 404:
            st.info("Live metrics are not available on this server: they join the inference log, "
                    "which only the SQL stores keep (on DynamoDB compare the CloudWatch metrics "
                    f"per experiment). The API said: {exc.detail or exc.error}",
                    icon=":material/query_stats:")
        else:
            session.show_error("Reading the live metrics", exc)
        return
    if not live["experiments"]:
        st.caption("No calls logged in this window yet.")
        return
    table = rollouts.live_frame(live)
    st.dataframe(table, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.4g") for c in table.columns})
    agreement = live.get("agreement")
    if agreement and agreement.get("shadow_agrees") is not None:
        st.metric("Shadow agrees with the champion", f"{agreement['shadow_agrees']:.1%}",
                  f"on {agreement['requests']} requests", delta_color="off", delta_arrow="off")
    st.caption("Metrics are computed on the requests that received feedback (POST /feedback).")


status = st.segmented_control("Status", ["all", "succeeded", "failed", "queued", "running"],
                              default="all", key="experiments_status") or "all"
everything = session.require("Listing experiments", api.experiments, name)
experiments = [e for e in everything if status == "all" or e["status"] == status]
history = session.call("Reading the deploy history", api.deployments, name) or []
state = session.call("Reading the rollout", api.rollout, name)

if any(e["status"] in ("queued", "running") for e in everything):
    st.info("Some experiments are still training.")
    st.button("Refresh", icon=":material/refresh:")
if not experiments:
    st.info(f"No {'' if status == 'all' else status + ' '}experiments for **{name}**: "
            "train one on the Train page.")
else:
    table = table_of(experiments, roles_of(state))
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

st.subheader("Rollout")
if state is not None:
    rollout_state(state)
    rollout_controls(everything, state)
    live_metrics(state)

st.subheader("Deploy history")
if history:
    shown = st.segmented_control("Show", rollouts.FAMILIES, selection_mode="multi",
                                 default=list(rollouts.FAMILIES), key="history_families")
    table = rollouts.history_frame(history, shown)
    if table.empty:
        st.caption("No such events.")
    else:
        numbered = {"experiment_id": st.column_config.NumberColumn("experiment", format="#%d"),
                    "previous": st.column_config.NumberColumn("replaced", format="#%d")}
        st.dataframe(table, hide_index=True, width="stretch", column_config=numbered)
else:
    st.caption("Nothing deployed yet.")
