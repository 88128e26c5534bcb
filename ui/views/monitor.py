"""Monitor: the chosen model's recent traffic from ``GET /inference_log``: requests, latency
percentiles, errors, and what it predicted over time; and its drift from ``GET /drift``: how far
the rows an experiment served have moved from its training rows (PSI per feature)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import drift, plots, rollouts, session, traffic
from ui.client import ApiError, Drift

REFRESH_SECONDS = 10

api = session.client()
st.title("Monitor")
model = session.require_model()
name, task = model["name"], model["task"]

left, middle, right = st.columns([3, 1, 1])
limit = left.select_slider("Most recent requests", [100, 500, 1000, 5000], value=500, key="monitor_limit")
every_model = middle.toggle("All models", key="monitor_all")
auto = right.toggle(f"Refresh every {REFRESH_SECONDS} s", key="monitor_auto")
scope = None if every_model else name


@st.fragment(run_every=REFRESH_SECONDS if auto else None)
def dashboard() -> None:
    try:
        rows = api.inference_log(scope, limit)
    except ApiError as exc:
        if exc.status == 404:
            st.info(f"Monitoring is not available on this server: GET /inference_log answered 404 "
                    f"({exc.detail}). Servers that keep an inference log serve it there.",
                    icon=":material/monitoring:")
        else:
            st.error(f"Reading the inference log failed: {exc.message}")
        return
    log = traffic.frame_of(rows)
    if log.empty:
        st.info(f"No requests logged for {'any model' if scope is None else f'**{name}**'} yet: "
                "make some predictions on the Predict page.")
        return
    numbers = traffic.summary(log)
    cells = st.columns(6)
    cells[0].metric("Requests", f"{numbers['requests']:.0f}")
    cells[1].metric("Rows predicted", f"{numbers['rows']:.0f}")
    cells[2].metric("Errors", f"{numbers['errors']:.0f}", f"{numbers['error_rate']:.1%} of requests",
                    delta_color="off", delta_arrow="off")
    for cell, q in zip(cells[3:], (50, 95, 99), strict=True):
        cell.metric(f"p{q} latency", f"{numbers[f'p{q}']:.1f} ms")
    freq = traffic.bin_width(log)
    first, second = st.columns(2)
    first.plotly_chart(plots.requests_over_time(log, freq), width="stretch")
    second.plotly_chart(plots.latency_over_time(log), width="stretch")
    predicted = traffic.predictions(log, task) if scope is not None else pd.DataFrame()
    if not predicted.empty:
        figure = (plots.predictions_over_time(predicted, freq) if task == "classification"
                  else plots.values_over_time(predicted))
        st.plotly_chart(figure, width="stretch")
    st.subheader("Latency by route")
    st.dataframe(traffic.latency_by_route(log), hide_index=True, width="stretch")
    # newest first; summaries are free-form JSON, shown as text
    shown = log.sort_values("time", ascending=False).assign(
        prediction_summary=log["prediction_summary"].map(lambda s: "" if s is None else str(s)))
    errors = shown[shown["status"] >= 400]
    if not errors.empty:
        st.subheader("Recent errors")
        st.dataframe(errors.head(50), hide_index=True, width="stretch")
    with st.expander(f"The log ({len(log)} requests, newest first)"):
        st.dataframe(shown, hide_index=True, width="stretch")


@st.fragment(run_every=REFRESH_SECONDS if auto else None)
def drift_section() -> None:
    st.subheader("Drift")
    deployed = model.get("deployed_experiment_id")
    served = [e["experiment_id"] for e in session.call("Listing experiments", api.experiments, name,
                                                        "succeeded") or []
              if e["experiment_id"] != deployed]
    left, right = st.columns(2)
    experiment = left.selectbox(
        "Experiment", [None, *served], key=f"drift_experiment-{name}",
        format_func=lambda i: f"the deployed one (#{deployed})" if i is None else f"#{i}")
    window = right.selectbox("Served", list(drift.WINDOWS), key="drift_window")
    try:
        found = api.drift(name, experiment, drift.since_of(window))
    except ApiError as exc:
        if exc.status == 404 and exc.detail.startswith("no route"):
            st.info("Drift is not available on this server (it has no GET /drift).",
                    icon=":material/compare:")
        elif exc.status == 409:  # image models, experiments from before profiles, MLFN_DRIFT=off
            st.info(f"No drift to show: {exc.detail}", icon=":material/compare:")
        else:
            session.show_error("Reading the drift", exc)
        return
    show_drift(found)


def show_drift(found: Drift) -> None:
    features = drift.frame_of(found)
    cells = st.columns(4)
    cells[0].metric("Rows counted", f"{found['rows']:,}")
    cells[1].metric("Largest PSI", "—" if found["max_psi"] is None else f"{found['max_psi']:.3f}")
    prediction = found.get("prediction") or {}
    cells[2].metric("Prediction PSI", "—" if prediction.get("psi") is None else f"{prediction['psi']:.3f}")
    cells[3].metric("Drifted features", f"{len(found['drifted'])} of {len(features)}")
    who = f"experiment #{found['experiment_id']}"
    if not drift.enough_rows(found):
        st.info(f"Not enough traffic yet: {who} served {found['rows']} rows since "
                f"{rollouts.when(found['since'])}; a feature is called drifted from {found['min_rows']} "
                "rows on.", icon=":material/hourglass_empty:")
    elif moved := [*found["drifted"], *(["the predictions"] if prediction.get("drifted") else [])]:
        st.warning(f"Drifted since {rollouts.when(found['since'])} (PSI above {found['threshold']:g}): "
                   + ", ".join(moved), icon=":material/warning:")
    else:
        st.success(f"No feature of {who} drifted since {rollouts.when(found['since'])} "
                   f"(every PSI at most {found['threshold']:g}).")
    if features["psi"].notna().any():
        st.plotly_chart(plots.psi_per_feature(features, found["threshold"]), width="stretch")
    st.dataframe(
        features.style.apply(lambda row: ["background-color: rgba(198, 40, 40, 0.15)" if row["drifted"]
                                          else ""] * len(row), axis=1),
        hide_index=True, width="stretch",
        column_config={"psi": st.column_config.NumberColumn("PSI", format="%.4f"),
                       "missing_train": st.column_config.NumberColumn("missing (training)", format="percent"),
                       "missing_served": st.column_config.NumberColumn("missing (served)", format="percent")})
    st.caption("PSI (population stability index) compares the share of served rows in each bin of the "
               "training data's profile; below 0.1 reads as stable. Shadow scorings are not counted.")


dashboard()
drift_section()
