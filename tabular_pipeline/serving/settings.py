"""Typed params of the ``package`` stage (build) and the ``serve`` section (runtime).

``package`` says what goes into the Bento; ``serve`` says how the service
behaves. Both are baked into the Bento (``serving.json``) at build time, so
the artifact is self-describing; only secrets (the API key) and the bind
address/port are read when the service starts.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTH_MODES = ("api_key", "none")


@dataclass
class ChallengerConfig:
    rev: str | None  # git revision whose train.model_out is the challenger
    share: float  # fraction of request keys routed to the challenger

    def __post_init__(self) -> None:
        if not 0 < self.share < 1:
            raise ValueError(f"challenger.share: {self.share!r} must be in (0, 1)")


@dataclass
class PackageConfig:
    out: str
    name: str
    challenger: ChallengerConfig


@dataclass
class ABConfig:
    key_header: str  # sticky key; requests without it go to the champion
    salt: str  # change to reshuffle which keys see the challenger


@dataclass
class PredictionLogConfig:
    path: str | None  # JSON lines; relative paths are under the serving cwd
    max_bytes: int
    backups: int


@dataclass
class ServeConfig:
    """No defaults: conf/config.yaml is their one home (see tabular_pipeline.config)."""

    host: str
    port: int
    workers: int
    threads: int
    max_batch_rows: int
    max_body_bytes: int
    access_log: bool
    auth: str
    api_key_env: str
    api_key_file: str | None
    open_paths: list[str]
    ab: ABConfig
    prediction_log: PredictionLogConfig

    def __post_init__(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth: {self.auth!r} is not one of {list(AUTH_MODES)}")


@dataclass
class DeployConfig:
    """The ``deploy`` section: a Kubernetes deployment's own choices (``make k8s``)."""

    out_dir: str
    registry: str
    replicas: int
    max_replicas: int
    target_cpu_percent: int
    cpu_request: str
    cpu_limit: str
    memory_request_mib: int
    memory_limit_mib: int
    grace_seconds: int
    api_key_secret: str
    log_volume_mib: int

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"replicas: {self.replicas} must be >= 1 and <= max_replicas {self.max_replicas}"
            )
        if self.memory_request_mib > self.memory_limit_mib:
            raise ValueError(
                f"memory_request_mib: {self.memory_request_mib} exceeds memory_limit_mib "
                f"{self.memory_limit_mib}"
            )
