"""Human-facing documents the pipeline generates (the model card)."""
