"""Declarative DVC + Hydra pipeline template for tabular machine learning.

The stage scripts under ``stages/`` are thin shells around this package.
"""

import os

# Usage telemetry off by default: the template must work with no network, and
# `dvc repro` runs stage scripts without the Makefile's environment. Only
# defaults are set; a user who exports these explicitly wins.
TELEMETRY_DEFAULTS = {
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "true",
}
for _var, _value in TELEMETRY_DEFAULTS.items():
    os.environ.setdefault(_var, _value)

__version__ = "0.1.0"
