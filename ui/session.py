"""What every page shares within one browser session: the API client, the chosen model, messages
kept across a rerun, and API calls whose failures are shown with ``st.error`` (never a traceback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import streamlit as st

from ui.client import ApiError, MlfnClient, Model

P = ParamSpec("P")
T = TypeVar("T")

PICKER_KEY = "mlfn_model"
PENDING_KEY = "mlfn_model_pending"
CURRENT_KEY = "mlfn_current_model"
MODELS_KEY = "mlfn_models"
FLASH_KEY = "mlfn_flash"


def client() -> MlfnClient:
    """A client configured from MLFN_UI_API_URL / MLFN_UI_API_KEY, read on every run."""
    return MlfnClient.from_env()


def show_error(action: str, exc: ApiError) -> None:
    st.error(f"{action} failed: {exc.message}", icon=":material/error:")


def call(action: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """Run one API call; on failure show ``action`` and the API's reason, and return None."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        show_error(action, exc)
        return None


def require(action: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Like :func:`call`, but a failure ends the page here (``st.stop``)."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        show_error(action, exc)
        st.stop()


def flash(message: str, kind: str = "success") -> None:
    """Keep a message for the next run (shown by :func:`show_flash`), e.g. across ``st.rerun``."""
    st.session_state.setdefault(FLASH_KEY, []).append((kind, message))


def show_flash() -> None:
    for kind, message in st.session_state.pop(FLASH_KEY, []):
        getattr(st, kind)(message)


def select_model(model: str) -> None:
    """Make ``model`` the sidebar's choice from the next run on (call ``st.rerun`` after it)."""
    st.session_state[PENDING_KEY] = model


def model_picker(models: list[Model]) -> Model | None:
    """The sidebar's model choice, shared by the pages; ``?model=`` in the URL preselects one."""
    if not models:
        st.sidebar.info("No models yet: create one on the Models page.")
        return None
    names = [m["name"] for m in models]
    if st.session_state.get(PICKER_KEY) not in names:
        st.session_state.pop(PICKER_KEY, None)
    wanted = st.session_state.pop(PENDING_KEY, None)
    if wanted is None and PICKER_KEY not in st.session_state:
        wanted = st.query_params.get("model")
    if wanted in names:
        st.session_state[PICKER_KEY] = wanted
    name = st.sidebar.selectbox("Model", names, key=PICKER_KEY)
    st.query_params["model"] = name
    return next(m for m in models if m["name"] == name)


def current_model() -> Model | None:
    """The model chosen in the sidebar (set by ``app.py`` before the page runs)."""
    return st.session_state.get(CURRENT_KEY)


def require_model() -> Model:
    """The chosen model, or stop the page with a hint when there is none yet."""
    model = current_model()
    if model is None:
        st.info("Create a model on the Models page first.")
        st.stop()
    return model


def models() -> list[Model]:
    return st.session_state.get(MODELS_KEY, [])
