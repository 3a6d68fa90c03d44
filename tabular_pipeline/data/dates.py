"""Reading dates from text: one parser for ingest, validate and `make schema`."""

from __future__ import annotations

import warnings

import pandas as pd


def parse_dates(series: pd.Series) -> pd.Series:
    """Dates as datetime64 (NaT where a value does not parse): ISO 8601 (any mix of
    precisions), else one format pandas infers from the values (``2012/01/31``)."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return series
    text = series.astype("string")
    iso = pd.to_datetime(text, errors="coerce", format="ISO8601")  # any ISO 8601 mix
    if not (text.notna() & iso.isna()).any():
        return iso
    with warnings.catch_warnings():
        # "Could not infer format": pandas then parses each value on its own, still strictly.
        warnings.simplefilter("ignore", UserWarning)
        return pd.to_datetime(text, errors="coerce")
