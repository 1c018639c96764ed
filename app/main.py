"""The interp dashboard: `interp app` (or `streamlit run app/main.py`).

One entry file; each view is a page under app/views. Pages read run folders under $INTERP_RUNS
(default ./runs) and probe models live through the same `interp` functions the experiments call.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `app` importable under `streamlit run`

import streamlit as st  # noqa: E402

st.set_page_config(page_title="interp", page_icon=":material/biotech:", layout="wide")
VIEWS = Path(__file__).parent / "views"  # not "pages/": streamlit would also list that folder by itself
st.navigation([
    st.Page(VIEWS / "home.py", title="Experiments", icon=":material/science:", default=True),
    st.Page(VIEWS / "sinks.py", title="Attention sinks", icon=":material/blur_circular:"),
    st.Page(VIEWS / "circuits.py", title="Circuits", icon=":material/cable:"),
    st.Page(VIEWS / "graphs.py", title="Attribution graph", icon=":material/account_tree:"),
    st.Page(VIEWS / "lenses.py", title="Lenses", icon=":material/visibility:"),
    st.Page(VIEWS / "features.py", title="Features", icon=":material/extension:"),
    st.Page(VIEWS / "steering.py", title="Steering", icon=":material/tune:"),
    st.Page(VIEWS / "dynamics.py", title="Training dynamics", icon=":material/show_chart:"),
    st.Page(VIEWS / "function_tokens.py", title="Function tokens", icon=":material/text_fields:"),
]).run()
