"""Monitor: the chosen model's recent traffic from ``GET /inference_log``: requests, latency
percentiles, errors, and what it predicted over time."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import plots, session, traffic
from ui.client import ApiError

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


dashboard()
