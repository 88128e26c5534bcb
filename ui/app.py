"""The mlfn web UI: ``.venv/bin/streamlit run ui/app.py``.

Configured by ``MLFN_UI_API_URL`` (default http://127.0.0.1:3000) and ``MLFN_UI_API_KEY`` (sent
as ``x-api-key``). It talks to the service over its public HTTP API only.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run ui/app.py` puts ui/ itself on sys.path; the pages import the `ui` package.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import streamlit as st  # noqa: E402

from ui import session  # noqa: E402

st.set_page_config(page_title="mlfn", page_icon=":material/model_training:", layout="wide")
st.set_option("client.toolbarMode", "minimal")  # no "Deploy to Community Cloud" button

PAGES = [
    st.Page("views/models.py", title="Models", icon=":material/inventory_2:", default=True),
    st.Page("views/data.py", title="Data", icon=":material/upload_file:"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/experiments.py", title="Experiments", icon=":material/science:"),
    st.Page("views/predict.py", title="Predict", icon=":material/online_prediction:"),
    st.Page("views/monitor.py", title="Monitor", icon=":material/monitoring:"),
]
page = st.navigation(PAGES)

api = session.client()
st.sidebar.caption(f"API: `{api.base_url}`" + (" · key set" if api.config.api_key else ""))
models = session.require("Connecting to the API", api.list_models)
st.session_state[session.MODELS_KEY] = models
st.session_state[session.CURRENT_KEY] = session.model_picker(models)
session.show_flash()
page.run()
