"""The servable model: featurizer plus estimator, built from config."""
