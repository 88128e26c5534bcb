"""Predict with the deployed experiment: one row from a form built from the feature schema, a batch
from a CSV (or a zip of images), one image for image models, and evaluation on a labelled file
with its metrics and a confusion matrix (classification) or a residual plot (regression)."""

from __future__ import annotations

import base64
from typing import Any

import pandas as pd
import streamlit as st

from ui import datasets, plots, session
from ui.client import BatchPrediction, Evaluation, Model, Prediction

IMAGE_WIDTH = 220

api = session.client()
st.title("Predict")
model = session.require_model()
name, task, target = model["name"], model["task"], model["target"]
image_model = model.get("input") == "image"
if model.get("deployed_experiment_id") is None:
    st.warning(f"Nothing is deployed for **{name}**: train with deploy policy 'always' on the Train page, "
               "or deploy an experiment on the Experiments page.")
    st.stop()
st.write(f"**{name}** ({task}, target `{target}`) serves experiment #{model['deployed_experiment_id']}.")


def show_prediction(answer: Prediction) -> None:
    value = answer["prediction"]
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    st.metric(f"Prediction (experiment #{answer['experiment_id']})", shown)
    probabilities = answer.get("probabilities")
    if probabilities:
        st.plotly_chart(plots.probabilities(probabilities), width="stretch")


def row_form(model: Model) -> None:
    features = model.get("features") or []
    if not features:
        st.info("This model has no feature schema yet.")
        return
    with st.form(f"row-{name}"):
        st.caption("An empty field is a missing value (imputed inside the model).")
        columns = st.columns(min(len(features), 4))
        record: dict[str, Any] = {}
        for i, feature in enumerate(features):
            column = columns[i % len(columns)]
            key = f"row-{name}-{feature['name']}"
            if feature["kind"] == "numeric":
                record[feature["name"]] = column.number_input(feature["name"], value=None, format="%g",
                                                              step=0.1, placeholder="missing", key=key)
            else:
                text = column.text_input(feature["name"], placeholder="missing", key=key)
                record[feature["name"]] = text if text != "" else None
        submitted = st.form_submit_button("Predict", type="primary", icon=":material/bolt:")
    if submitted:
        answer = session.call("Predicting", api.forward, name, record)
        if answer is not None:
            show_prediction(answer)


def image_form() -> None:
    left, right = st.columns([3, 1])
    upload = left.file_uploader("Image (PNG, JPEG or WebP)", type=["png", "jpg", "jpeg", "webp"],
                                key=f"image-{name}")
    top_k = right.number_input("Classes to return (X-Top-K)", min_value=1, max_value=50, value=3, step=1)
    if upload is None:
        return
    if st.button("Predict", type="primary", icon=":material/bolt:", key=f"image-go-{name}"):
        answer = session.call("Predicting", api.forward_image, name, upload.name, upload.getvalue(),
                              int(top_k))
        if answer is None:
            return
        uploaded, seen, result = st.columns([1, 1, 2])
        uploaded.image(upload.getvalue(), caption="Uploaded", width=IMAGE_WIDTH)
        if answer.get("image"):
            seen.image(base64.b64decode(answer["image"]), caption="As the model saw it", width=IMAGE_WIDTH)
        with result:
            show_prediction(answer)


def read_csv(content: bytes, **kwargs: Any) -> pd.DataFrame | None:
    try:
        return datasets.read_csv(content, **kwargs)
    except datasets.UnreadableFile as exc:
        st.error(f"Cannot read the upload: {exc}.")
        return None


def result_table(answer: BatchPrediction, inputs: pd.DataFrame | None) -> pd.DataFrame:
    """Inputs (when a CSV) + prediction + one ``p(class)`` column per class, in input order; for a
    zip, any other per-item list in the answer (such as file names) comes first."""
    n = len(answer["predictions"])
    table = inputs.reset_index(drop=True).copy() if inputs is not None else pd.DataFrame(index=range(n))
    if inputs is None:
        for key, value in answer.items():
            if key not in ("predictions", "probabilities") and isinstance(value, list) and len(value) == n:
                table[key] = value
    table["prediction"] = answer["predictions"]
    probabilities = answer.get("probabilities")
    if probabilities:
        columns = pd.DataFrame([p or {} for p in probabilities])
        table = pd.concat([table, columns.rename(columns=lambda label: f"p({label})")], axis=1)
    return table


def batch_form() -> None:
    kinds = ["zip"] if image_model else ["csv"]
    upload = st.file_uploader("Images in a zip" if image_model else "CSV with a header row of features",
                              type=kinds, key=f"batch-{name}")
    if upload is None:
        return
    content = upload.getvalue()
    inputs = None if image_model else read_csv(content)
    if not image_model and inputs is None:
        return
    if inputs is not None:
        st.caption(f"{len(inputs)} rows.")
    if st.button("Predict the batch", type="primary", icon=":material/bolt:", key=f"batch-go-{name}"):
        answer = session.call("Predicting the batch", api.forward_batch, name, upload.name, content)
        if answer is None:
            return
        table = result_table(answer, inputs)
        st.success(f"{len(table)} predictions from experiment #{answer['experiment_id']}.")
        st.dataframe(table, hide_index=True, width="stretch")
        stem = upload.name.rsplit(".", 1)[0]
        st.download_button("Download predictions (CSV)", table.to_csv(index=False).encode(),
                           file_name=f"{stem}-predictions.csv", mime="text/csv",
                           icon=":material/download:", key=f"batch-download-{name}")


def actual_labels(
    answer: Evaluation, labelled: pd.DataFrame | None, archive: bytes | None
) -> list[Any] | None:
    """The true targets in answer order: the CSV's target column, or a zip's labels by file."""
    if labelled is not None and target in labelled.columns:
        return labelled[target].tolist()
    files = answer.get("files")
    if archive is None or not isinstance(files, list):
        return None
    try:
        labels = datasets.archive_labels(archive)
    except datasets.UnreadableFile:
        return None
    found = [labels.get(f) for f in files]
    return None if any(label is None for label in found) else found


def show_evaluation(answer: Evaluation, actual: list[Any] | None) -> None:
    st.success(f"Experiment #{answer['experiment_id']} on {answer['n']} rows.")
    metrics = answer.get("metrics") or {}
    for column, (metric, value) in zip(st.columns(max(len(metrics), 1)), metrics.items(), strict=False):
        column.metric(metric, f"{value:.4f}")
    if actual is None or len(actual) != len(answer["predictions"]):
        return
    if task == "classification":
        st.plotly_chart(plots.confusion_matrix(actual, answer["predictions"]), width="stretch")
    else:
        numbers = pd.to_numeric(pd.Series(actual), errors="coerce").tolist()
        st.plotly_chart(plots.residuals(numbers, answer["predictions"]), width="stretch")


def evaluate_form() -> None:
    kinds = ["zip"] if image_model else ["csv"]
    upload = st.file_uploader(f"Labelled {'zip' if image_model else 'CSV'} (features and `{target}`)",
                              type=kinds, key=f"evaluate-{name}")
    if upload is None:
        return
    content = upload.getvalue()
    # the target as written in the file, so labels compare as the API reads them
    labelled = None if image_model else read_csv(content, dtype={target: str})
    if labelled is not None and target not in labelled.columns:
        st.warning(f"The file has no `{target}` column: the API will refuse it.")
    if st.button("Evaluate", type="primary", icon=":material/fact_check:", key=f"evaluate-go-{name}"):
        answer = session.call("Evaluating", api.evaluate, name, upload.name, content)
        if answer is not None:
            show_evaluation(answer, actual_labels(answer, labelled, content if image_model else None))


first = "Image" if image_model else "One row"
tabs = st.tabs([first, "Batch", "Evaluate"])
with tabs[0]:
    if image_model:
        image_form()
    else:
        row_form(model)
with tabs[1]:
    batch_form()
with tabs[2]:
    evaluate_form()
