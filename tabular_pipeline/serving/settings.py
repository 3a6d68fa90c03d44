"""Typed params of the ``package`` stage (build) and the ``serve`` section (runtime).

``package`` says what goes into the Bento; ``serve`` says how the service
behaves. Both are baked into the Bento (``serving.json``) at build time, so
the artifact is self-describing; only secrets (the API key) and the bind
address/port are read when the service starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChallengerConfig:
    rev: str | None = None  # git revision whose train.model_out is the challenger
    share: float = 0.1  # fraction of request keys routed to the challenger


@dataclass
class PackageConfig:
    out: str = "models/service.bento"
    name: str = "tabular-classifier"
    # The register stage's decision ({"promoted": bool}); a rejected model is not
    # packaged. Skipped while the file does not exist (no register stage yet).
    challenger: ChallengerConfig = field(default_factory=ChallengerConfig)


@dataclass
class ABConfig:
    key_header: str = "X-Request-Key"  # sticky key; requests without it go to the champion
    salt: str = "ab"  # change to reshuffle which keys see the challenger


@dataclass
class PredictionLogConfig:
    path: str | None = None  # JSON lines; relative paths are under the serving cwd
    max_bytes: int = 10_000_000
    backups: int = 5


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 3000
    workers: int = 1
    threads: int = 4
    max_batch_rows: int = 1000
    max_body_bytes: int = 1_048_576
    access_log: bool = False
    auth: str = "api_key"  # api_key | none
    api_key_env: str = "TABULAR_API_KEY"
    api_key_file: str | None = None
    open_paths: list[str] = field(
        default_factory=lambda: ["/livez", "/readyz", "/healthz", "/metrics"]
    )
    ab: ABConfig = field(default_factory=ABConfig)
    prediction_log: PredictionLogConfig = field(default_factory=PredictionLogConfig)
