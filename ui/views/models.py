"""Models: every model with its dataset size and deployed experiment; create a model; delete
experiments of the chosen one, or the model itself (after a confirmation)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import session
from ui.client import ApiError, Experiment, Model, Task

api = session.client()
st.title("Models")


def latest_data(experiments: list[Experiment]) -> tuple[int | None, int | None]:
    """(dataset version, rows) of the newest dataset version an experiment was trained on."""
    known = [e for e in experiments if e.get("dataset_version") is not None and e.get("rows") is not None]
    if not known:
        return None, None
    newest = max(known, key=lambda e: (e["dataset_version"] or 0, e["experiment_id"]))
    return newest["dataset_version"], newest["rows"]


def overview(models: list[Model]) -> dict[str, list[Experiment]]:
    experiments: dict[str, list[Experiment]] = {}
    rows = []
    for m in models:
        experiments[m["name"]] = session.call(f"Listing experiments of {m['name']}",
                                              api.experiments, m["name"]) or []
        version, n_rows = latest_data(experiments[m["name"]])
        rows.append({
            "model": m["name"],
            "task": m["task"],
            "target": m["target"],
            "input": m.get("input", "tabular"),
            "features": len(m.get("features") or []),
            "deployed experiment": m.get("deployed_experiment_id"),
            "dataset version": version,
            "rows": n_rows,
            "experiments": len(experiments[m["name"]]),
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("Dataset version and rows as of the newest dataset an experiment was trained on; "
               "the Data page shows the total after each upload.")
    return experiments


def create_form() -> None:
    st.subheader("Create a model")
    kind = st.radio("Input", ["tabular", "image"], horizontal=True, key="create_input",
                    captions=["a CSV of feature columns", "images: PNG, JPEG or WebP"])
    with st.form("create_model"):
        left, middle, right = st.columns(3)
        name = left.text_input("Name", placeholder="churn",
                               help="1–64 lowercase letters, digits, '-' or '_', "
                                    "starting with a letter or digit")
        task: Task = middle.selectbox("Task", ["classification", "regression"])
        target = right.text_input("Target column", value="label" if kind == "image" else "",
                                  placeholder="churned")
        size, color = None, None
        if kind == "image":
            left, right = st.columns(2)
            size = left.number_input("Image size (pixels, square)", min_value=1, max_value=512, value=28,
                                     help="images are resized to this before the model sees them")
            color = right.selectbox("Colour", ["grayscale", "rgb"])
        submitted = st.form_submit_button("Create model", type="primary", icon=":material/add:")
    if not submitted:
        return
    if not name.strip() or not target.strip():
        st.error("Give the model a name and a target column.")
        return
    created = session.call("Creating the model", api.create_model, name.strip(), task, target.strip(), kind,
                           None if size is None else int(size), color)
    if created is not None:
        session.flash(f"Created model **{created['name']}** ({created['task']}, target "
                      f"`{created['target']}`). Upload data for it on the Data page.")
        session.select_model(created["name"])
        st.rerun()


def delete_form(model: Model, experiments: list[Experiment]) -> None:
    st.subheader(f"Experiments of {model['name']}")
    if not experiments:
        st.info("No experiments yet: train one on the Train page.")
        return
    deployed = model.get("deployed_experiment_id")
    table = pd.DataFrame([{
        "id": e["experiment_id"],
        "status": e["status"],
        "class": e["model_class"],
        "deployed": e["experiment_id"] == deployed,
        "dataset version": e.get("dataset_version"),
        "created": e.get("created_at"),
    } for e in experiments])
    st.dataframe(table, hide_index=True, width="stretch")
    deletable = [e["experiment_id"] for e in experiments
                 if e["experiment_id"] != deployed and e["status"] in ("succeeded", "failed")]
    if not deletable:
        st.caption("Nothing to delete: the deployed experiment and queued or running ones are kept.")
        return
    nonce = st.session_state.setdefault("mlfn_delete_nonce", 0)
    chosen = st.multiselect("Experiments to delete", deletable, key=f"delete-{model['name']}-{nonce}",
                            help="The deployed experiment and queued/running ones cannot be deleted.")
    if st.button("Delete selected experiments", disabled=not chosen, icon=":material/delete:"):
        deleted = []
        for experiment_id in chosen:
            try:
                api.delete_experiment(experiment_id)
            except ApiError as exc:
                session.flash(f"Deleting experiment #{experiment_id} failed: {exc.message}", "error")
            else:
                deleted.append(experiment_id)
        if deleted:
            session.flash(f"Deleted experiment(s) {', '.join(f'#{i}' for i in deleted)}.")
        st.session_state["mlfn_delete_nonce"] = nonce + 1
        st.rerun()


CONFIRM_KEY = "mlfn_delete_model"


def delete_model_form(model: Model, experiments: list[Experiment]) -> None:
    """Delete the model, after a second click that names what goes with it."""
    name = model["name"]
    st.subheader(f"Delete {name}")
    busy = [e["experiment_id"] for e in experiments if e["status"] in ("queued", "running")]
    if st.session_state.get(CONFIRM_KEY) != name:
        st.caption("Deletes the model with its data, experiments, deployments and files.")
        if busy:
            st.caption(f"Experiments {', '.join(f'#{i}' for i in busy)} are still training: the "
                       "model can be deleted when they have ended.")
        if st.button(f"Delete model {name}", icon=":material/delete_forever:", disabled=bool(busy)):
            st.session_state[CONFIRM_KEY] = name
            st.rerun()
        return
    st.warning(f"Delete **{name}** with its {len(experiments)} experiment(s), its dataset and "
               "every file? This cannot be undone.", icon=":material/warning:")
    left, right = st.columns(2)
    if left.button(f"Yes, delete {name}", type="primary", icon=":material/delete_forever:"):
        st.session_state.pop(CONFIRM_KEY, None)
        try:
            api.delete_model(name)
        except ApiError as exc:
            session.show_error(f"Deleting model {name}", exc)
        else:
            session.flash(f"Deleted model **{name}** with its data, experiments and files.")
            st.rerun()
    if right.button("Cancel", key="delete_model_cancel"):
        st.session_state.pop(CONFIRM_KEY, None)
        st.rerun()


models = session.models()
if models:
    all_experiments = overview(models)
else:
    all_experiments = {}
    st.info("No models yet.")
create_form()
chosen = session.current_model()
if chosen is not None:
    delete_form(chosen, all_experiments.get(chosen["name"], []))
    features = chosen.get("features") or []
    with st.expander(f"Feature schema of {chosen['name']} ({len(features)} features)"):
        if features:
            st.dataframe(pd.DataFrame(features), hide_index=True, width="stretch")
        elif chosen.get("input") == "image":
            st.write("An image model: its features are the pixels of the resized image.")
        else:
            st.write("No schema yet: the first upload fixes it.")
    delete_model_form(chosen, all_experiments.get(chosen["name"], []))
