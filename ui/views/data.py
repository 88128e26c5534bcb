"""Data: the chosen model's dataset versions and parts (remove a part: a new version without it);
look at a labelled CSV (target, features, correlations, missing values), then add it to the
model's dataset (a zip of images goes up as it is). A file over the API's request limit (a CSV or
a zip) goes up as an upload (POST /uploads) and is ingested in the background: the page follows
the ingestion to its outcome (the new dataset version, or the row or archive entry that failed
and why)."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from ui import datasets, plots, session
from ui.client import DatasetPart, Datasets, Ingestion, Model

INGESTION_KEY = "mlfn_ingestion"
FOLLOW_SECONDS = 300.0  # how long one run follows an ingestion; "Check again" follows it further
POLL_SECONDS = 0.3

api = session.client()
st.title("Data")
model = session.require_model()


def part_label(part: DatasetPart) -> str:
    origin = part["source"] + (f" {part['filename']}" if part.get("filename") else "")
    return f"#{part['version']} · {part['rows']} rows · {origin}"


def versions_table(data: Datasets) -> pd.DataFrame:
    return pd.DataFrame([{
        "version": v["version"],
        "change": f"{v['change']} part #{v['part']}" if v["change"] else "",
        "parts": ", ".join(f"#{i}" for i in v["parts"]),
        "rows": v["rows"],
        "experiments": ", ".join(f"#{i}" for i in v["experiments"]),
        "when": v["created_at"],
    } for v in reversed(data["versions"])])  # newest first


def dataset_section(model: Model) -> None:
    """The model's parts and versions, and removing a part."""
    name = model["name"]
    st.subheader(f"Dataset of {name}")
    data = session.call("Reading the dataset", api.datasets, name)
    if data is None:
        return
    if not data["parts"]:
        st.caption("No data yet: upload some below.")
        return
    active = [p for p in data["parts"] if p["removed_in"] is None]
    st.write(f"Dataset version **{data['dataset_version']}**: {data['rows_total']} rows in "
             f"{len(active)} part(s).")
    st.dataframe(pd.DataFrame([{
        "part": p["version"],
        "rows": p["rows"],
        "source": p["source"],
        "file": p.get("filename"),
        "added": p["created_at"],
        "removed in version": p["removed_in"],
    } for p in data["parts"]]), hide_index=True, width="stretch")
    with st.expander(f"Dataset versions ({len(data['versions'])}) and the experiments trained on them"):
        st.dataframe(versions_table(data), hide_index=True, width="stretch")
    if not active:
        st.caption("Every part was removed: upload data to train again.")
        return
    by_version = {p["version"]: p for p in active}
    chosen = st.selectbox("Part to remove", list(by_version), key=f"remove_part-{name}",
                          format_func=lambda v: part_label(by_version[v]))
    st.caption("Removing a part makes a new dataset version without it; the earlier versions, "
               "and the experiments trained on them, keep it.")
    if st.button(f"Remove part #{chosen}", icon=":material/delete:"):
        removed = session.call(f"Removing part #{chosen}", api.remove_part, name, chosen)
        if removed is not None:
            session.flash(f"Removed part #{removed['removed']} from **{removed['model']}**: "
                          f"dataset version {removed['dataset_version']} has "
                          f"{removed['rows_total']} rows.")
            st.rerun()


def schema_check(frame: pd.DataFrame, model: Model) -> None:
    """Warn before uploading what the API would refuse; the API stays the judge."""
    target = model["target"]
    if target not in frame.columns:
        st.warning(f"The target column `{target}` is missing: the API will refuse this file.")
    expected = [f["name"] for f in model.get("features") or []]
    if expected:
        columns = [c for c in frame.columns if c != target]
        missing = [c for c in expected if c not in columns]
        extra = [c for c in columns if c not in expected]
        if missing or extra:
            st.warning(f"The columns differ from the model's schema: missing {missing or 'none'}, "
                       f"unexpected {extra or 'none'}.")
    else:
        st.caption("This is the model's first upload: it fixes the feature schema "
                   "(numeric or categorical, inferred from the values).")


def explore(frame: pd.DataFrame, model: Model) -> None:
    target, task = model["target"], model["task"]
    features = [c for c in frame.columns if c != target]
    has_target = target in frame.columns
    tabs = st.tabs(["Target", "Features", "Correlation", "Missing values"])
    with tabs[0]:
        if has_target:
            st.plotly_chart(plots.target_distribution(frame, target, task), width="stretch")
        else:
            st.info(f"No `{target}` column in this file.")
    with tabs[1]:
        if not features:
            st.info("No feature columns.")
        else:
            feature = st.selectbox("Feature", features, key="eda_feature")
            left, right = st.columns(2)
            with left:
                st.plotly_chart(plots.feature_histogram(frame, feature, target if has_target else None, task),
                                width="stretch")
            with right:
                if has_target:
                    st.plotly_chart(plots.feature_by_target(frame, feature, target, task), width="stretch")
    with tabs[2]:
        heatmap = plots.correlation_heatmap(frame)
        if heatmap is None:
            st.info("Fewer than two numeric columns: nothing to correlate.")
        else:
            st.plotly_chart(heatmap, width="stretch")
    with tabs[3]:
        st.plotly_chart(plots.missing_values(frame), width="stretch")


def explore_archive(content: bytes) -> None:
    labels = datasets.archive_labels(content)
    st.write(f"{len(labels)} images in the archive.")
    known = [label for label in labels.values() if label is not None]
    if known:
        st.plotly_chart(plots.label_counts(known, "Images per label"), width="stretch")
    else:
        st.warning("No labels found: put images in folders named by label or add a labels.csv.")
    samples = datasets.archive_samples(content)
    if samples:
        st.image([data for _, data in samples], width=96,
                 caption=[str(labels.get(name) or name.rsplit("/", 1)[-1]) for name, _ in samples])


def progress_text(ingestion: Ingestion, rows: int) -> str:
    read = ingestion.get("rows_read") or 0
    return (f"Ingesting the upload: {ingestion['status']}, {read} of about {rows} rows read "
            f"(attempt {max(ingestion.get('attempts') or 0, 1)})")


def follow(ingestion: Ingestion, rows: int) -> Ingestion | None:
    """Poll the ingestion, with a progress bar, until it ends or FOLLOW_SECONDS pass."""
    bar = st.progress(0.0, text=progress_text(ingestion, rows))
    deadline = time.monotonic() + FOLLOW_SECONDS
    while ingestion["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        got = session.call("Following the ingestion", api.ingestion, ingestion["ingestion_id"],
                           ingestion["model"])
        if got is None:
            return None
        ingestion = got
        share = min((ingestion.get("rows_read") or 0) / rows, 1.0) if rows else 0.0
        bar.progress(share, text=progress_text(ingestion, rows))
    bar.empty()
    return ingestion


def report(tracked: dict[str, Any], key: str) -> None:
    """Follow the ingestion kept under ``key`` and show how it ended (or that it still runs)."""
    ingestion = follow(tracked["ingestion"], tracked["rows"])
    if ingestion is None:  # the API did not answer: keep it, to check again
        st.button("Check the ingestion again", icon=":material/refresh:")
        return
    filename = tracked["filename"]
    if ingestion["status"] == "succeeded":
        st.session_state.pop(key, None)
        session.flash(f"Added {ingestion.get('rows_added')} rows to **{ingestion['model']}** from "
                      f"the upload of {filename}: dataset version {ingestion.get('dataset_version')}. "
                      "Train on it on the Train page.")
        st.rerun()  # the dataset above shows the new part
    if ingestion["status"] == "failed":
        st.session_state.pop(key, None)
        row = ingestion.get("row")
        if row is None:
            where = ""
        elif filename.lower().endswith(".zip"):
            where = f" at image {row} (counted from 0, in the archive's order)"
        else:
            where = f" at data row {row} (counted from 0; line {row + 2} of the file)"
        st.error(f"Ingesting {filename} failed{where}: {ingestion.get('error')}. Nothing was "
                 "added: the dataset is unchanged.", icon=":material/error:")
        return
    tracked["ingestion"] = ingestion
    st.info(f"{filename} is still being ingested ({ingestion['status']}, "
            f"{ingestion.get('rows_read') or 0} rows read; ingestion {ingestion['ingestion_id']}).")
    st.button("Check the ingestion again", icon=":material/refresh:")


dataset_section(model)
ingestion_key = f"{INGESTION_KEY}-{model['name']}"
if ingestion_key in st.session_state:
    st.subheader("Upload in progress")
    report(st.session_state[ingestion_key], ingestion_key)

st.subheader("Add data")
image_model = model.get("input") == "image"
st.write(f"Add labelled {'images' if image_model else 'rows'} to **{model['name']}** "
         f"(target `{model['target']}`, {model['task']}).")
upload = st.file_uploader(
    "Zip of images in folders named by label, or flat with a labels.csv" if image_model
    else "Labelled CSV (a header row with the features and the target)",
    type=["zip"] if image_model else ["csv", "zip"], key=f"data_upload-{model['name']}")
if upload is None:
    st.stop()
content = upload.getvalue()
try:
    if upload.name.lower().endswith(".zip"):
        explore_archive(content)
    else:
        frame = datasets.read_csv(content, nrows=datasets.PREVIEW_ROWS)
        if len(frame) < datasets.PREVIEW_ROWS:
            st.write(f"**{upload.name}**: {len(frame)} rows × {frame.shape[1]} columns")
        else:
            st.write(f"**{upload.name}**: about {datasets.data_rows(content)} rows × "
                     f"{frame.shape[1]} columns; the first {len(frame)} are shown")
        schema_check(frame, model)
        st.dataframe(frame.head(200), width="stretch", height=240)
        explore(frame, model)
except datasets.UnreadableFile as exc:
    st.error(f"Cannot look into {upload.name}: {exc}. The API will judge it on upload.")

if st.button(f"Add to {model['name']}", type="primary", icon=":material/cloud_upload:"):
    added = session.call("Uploading the data", api.add_file, model["name"], upload.name, content)
    if added is not None and "ingestion_id" in added:  # an upload: ingested in the background
        tracked = {"ingestion": added, "filename": upload.name,
                   "rows": datasets.file_rows(upload.name, content)}
        st.session_state[ingestion_key] = tracked
        report(tracked, ingestion_key)
    elif added is not None:
        session.flash(f"Added {added['rows_added']} rows to **{added['model']}**: "
                      f"{added['rows_total']} rows in dataset version {added['dataset_version']}. "
                      "Train on it on the Train page.")
        st.rerun()  # the dataset above shows the new part
