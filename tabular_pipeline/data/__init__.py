"""Data stages: ingest, validate (Great Expectations) and split."""
