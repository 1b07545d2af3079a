"""The Streamlit dashboard over the run store (entry: apps/dashboard.py; see apps/README.md)."""
