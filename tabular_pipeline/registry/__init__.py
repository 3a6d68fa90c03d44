"""Model registry: promotion gates and idempotent MLflow registration."""
