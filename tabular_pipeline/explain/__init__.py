"""SHAP explanations: exact where the model allows it, named by input column.

``shap_values`` is what the service ships (no plotting); ``report`` builds the
pipeline's artifacts (global importance, summary plot, per-group table).
"""
