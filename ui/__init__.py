"""The mlfn web UI (Streamlit): a client of the public HTTP API, nothing more.

Start it with ``.venv/bin/streamlit run ui/app.py``; see ui/README.md.
"""
