"""Monitoring: data and prediction drift (Evidently) and its gate."""
