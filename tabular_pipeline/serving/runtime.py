"""What the service needs at run time, free of BentoML: config, variants, A/B, logging.

``serving.json`` (written by the package stage, shipped in the Bento) holds
the request schema, the classes, the model variants with their hashes and the
``serve`` params. Everything here is plain Python so it is unit-tested
without starting a server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_core import to_json

from tabular_pipeline.serving.schema import FieldSpec
from tabular_pipeline.serving.settings import ServeConfig

CONFIG_ENV = "TABULAR_SERVING_CONFIG"
CWD_ENV = "TABULAR_SERVE_CWD"  # where `make serve` ran: base of relative log paths
CONFIG_NAME = "serving.json"
KEY_FILE_SUFFIX = "_FILE"  # $TABULAR_API_KEY_FILE: a file holding the key (a mounted secret)
MODEL_FILE = "model.joblib"

log = logging.getLogger(__name__)

# Inside the Bento's image (its Dockerfile sets BENTOML_CONTAINERIZED=true) the
# defaults differ from `make serve`'s: listen on every interface (serve.host,
# 127.0.0.1, is unreachable through a published port; `bentoml serve --host` or
# $BENTOML_HOST still override it), and put relative log paths under the
# unprivileged `bentoml` user's home (a volume in the Kubernetes manifests).
CONTAINER_FLAG = "BENTOML_CONTAINERIZED"
CONTAINER_HOST = "0.0.0.0"
CONTAINER_DATA = "/home/bentoml/data"


@dataclass
class Variant:
    name: str
    model_tag: str  # BentoML model tag inside the Bento
    sha256: str  # hash of the pipeline file it was built from
    share: float


@dataclass
class ServingConfig:
    name: str
    target: str
    classes: list[str]
    fields: list[FieldSpec]
    variants: list[Variant]
    serve: ServeConfig
    # /explain: background rows (JSON records), seed and permutation budget for
    # explainers that need them (see tabular_pipeline/explain/shap_values.py).
    explain: dict[str, Any] = field(default_factory=dict)
    task: str = "binary"  # binary | multiclass | regression: the response shape

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> ServingConfig:
        from omegaconf import OmegaConf

        serve = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(ServeConfig), payload.get("serve", {}))
        )
        assert isinstance(serve, ServeConfig)
        return cls(
            name=payload["name"],
            target=payload["target"],
            classes=list(payload["classes"]),
            fields=[FieldSpec.from_json(f) for f in payload["fields"]],
            variants=[Variant(**v) for v in payload["variants"]],
            serve=serve,
            explain=dict(payload.get("explain", {})),
            task=str(payload.get("task", "binary")),
        )


def config_path() -> Path:
    """$TABULAR_SERVING_CONFIG at build time; next to the package inside the Bento."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path(__file__).resolve().parents[2] / CONFIG_NAME


def load_config(path: Path | None = None) -> ServingConfig:
    path = path or config_path()
    return ServingConfig.from_json(json.loads(path.read_text(encoding="utf-8")))


def in_container(environ: dict[str, str] | None = None) -> bool:
    environ = dict(os.environ) if environ is None else environ
    return environ.get(CONTAINER_FLAG, "").lower() == "true"


def bind_host(serve: ServeConfig, environ: dict[str, str] | None = None) -> str:
    """serve.host, or every interface inside the image."""
    return CONTAINER_HOST if in_container(environ) else serve.host


def log_base(environ: dict[str, str] | None = None) -> Path:
    """Base of relative prediction-log paths: $TABULAR_SERVE_CWD (set by `make serve`),
    else the image's data folder, else the working directory."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get(CWD_ENV):
        return Path(environ[CWD_ENV])
    return Path(CONTAINER_DATA if in_container(environ) else ".")


# -- A/B split ---------------------------------------------------------------------
def bucket(key: str, salt: str) -> float:
    """A stable number in [0, 1) for a request key: the same key always lands the same."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_variant(variants: list[Variant], key: str | None, salt: str) -> Variant:
    """Sticky split by key; requests without a key go to the first variant (champion)."""
    if key is None or len(variants) == 1:
        return variants[0]
    point = bucket(key, salt)
    # Challengers take the top of the unit interval, the champion the rest.
    edge = 1.0
    for variant in reversed(variants[1:]):
        edge -= variant.share
        if point >= edge:
            return variant
    return variants[0]


# -- API key -----------------------------------------------------------------------
class AuthConfigError(RuntimeError):
    """No API key configured and auth was not explicitly disabled."""


def resolve_api_key(serve: ServeConfig, environ: dict[str, str] | None = None) -> str | None:
    """The key from the env variable, else from the file named in config; None if auth: none."""
    environ = dict(os.environ) if environ is None else environ
    if serve.auth == "none":
        log.warning("serve.auth is 'none': the prediction API is open to anyone who can reach it")
        return None
    if serve.auth != "api_key":
        raise AuthConfigError(f"serve.auth must be 'api_key' or 'none', not {serve.auth!r}")
    key = environ.get(serve.api_key_env, "").strip()
    # A mounted secret (Kubernetes, Docker/Podman secrets): $<api_key_env>_FILE
    # names the file, as official images do; serve.api_key_file is the default.
    key_file = environ.get(f"{serve.api_key_env}{KEY_FILE_SUFFIX}") or serve.api_key_file
    if not key and key_file:
        path = Path(key_file).expanduser()
        if path.is_file():
            key = path.read_text(encoding="utf-8").strip()
    if not key:
        where = f"${serve.api_key_env}, a file named by ${serve.api_key_env}{KEY_FILE_SUFFIX}"
        if key_file:
            where += f" (now {key_file}: missing or empty)"
        raise AuthConfigError(
            f"no API key: set {where}, or set serve.auth: none to serve without auth"
        )
    return key


# -- prediction ids ----------------------------------------------------------------
def new_ids(n: int) -> list[str]:
    """``n`` random UUIDs (version 4, as hex) from one system call, not one per row."""
    import numpy as np

    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.tobytes().hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


# -- prediction log ----------------------------------------------------------------
LOG_FILE_MODE = 0o600  # the log holds every request's features: owner-only
LOG_DIR_MODE = 0o700


class OwnerOnlyRotatingHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose file and rotated backups are 0600 whatever the umask.

    ``os.open`` with a mode still obeys the umask, so the mode is also set on
    the open descriptor (it also narrows a file an older version left 0644);
    a rotated backup keeps its mode across the rename, and is set again in
    case it came from such a file.
    """

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_FILE_MODE)
        os.fchmod(fd, LOG_FILE_MODE)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def rotate(self, source: str, dest: str) -> None:
        super().rotate(source, dest)
        if os.path.exists(dest):
            os.chmod(dest, LOG_FILE_MODE)


def owner_only_dir(folder: Path) -> None:
    """Create the log folder 0700 (umask or not); an existing wider one is only warned about
    (it may be shared, e.g. the project root), the files in it are 0600 anyway."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, LOG_DIR_MODE)
    elif folder.stat().st_mode & 0o077:
        log.warning(
            "prediction log folder %s is accessible to other users (mode %o); the log files "
            "are 0600, but `chmod 700 %s` keeps even their names private",
            folder,
            folder.stat().st_mode & 0o777,
            folder,
        )


def _floats(values: Any) -> list[Any]:
    """Python floats (an array's ``tolist``: one call for the whole batch; a list is
    taken to be one already, as the service makes it)."""
    if isinstance(values, list):
        return values
    if hasattr(values, "tolist"):
        return list(values.tolist())
    return [[float(v) for v in x] if hasattr(x, "__iter__") else float(x) for x in values]


class PredictionLog:
    """JSON lines of served requests (id, features, prediction, variant, time), rotated by size.

    One line per row; ``tabular_pipeline.monitoring.logs`` reads them back.
    """

    def __init__(self, path: str, max_bytes: int, backups: int, worker: int = 0) -> None:
        target = Path(path)
        if worker:
            target = target.with_name(f"{target.stem}.{worker}{target.suffix}")
        owner_only_dir(target.parent)
        self.path = target
        self.logger = logging.getLogger(f"tabular_pipeline.serving.predictions.{worker}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        handler = OwnerOnlyRotatingHandler(
            target, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger.handlers = [handler]

    def write(
        self,
        rows: list[dict[str, Any]],
        labels: list[str],
        probas: Any,
        variant: Variant,
        ids: list[str] | None = None,
    ) -> None:
        """A classifier's records: the label and the class probabilities."""
        self._emit(rows, variant, ids, label=labels, proba=_floats(probas))

    def write_values(
        self,
        rows: list[dict[str, Any]],
        values: Any,
        variant: Variant,
        ids: list[str] | None = None,
    ) -> None:
        """A regressor's records: the predicted value instead of a label and probabilities."""
        self._emit(rows, variant, ids, prediction=_floats(values))

    def _emit(
        self,
        rows: list[dict[str, Any]],
        variant: Variant,
        ids: list[str] | None,
        **outputs: list[Any],
    ) -> None:
        """One write for the request: a line per row, in order, rotated between requests.

        One log call per row cost more than the model (1,000 rows: a lock, a
        rollover check with seek/tell and a flush each), and the stdlib JSON
        encoder another ~6.5 ms per 1,000 rows; pydantic-core's encoder (already
        there: BentoML validates with it) writes the same records in ~1.5 ms.
        """
        if not rows:
            return
        now = time.time()
        ids = ids if ids is not None else [""] * len(rows)
        names = list(outputs)
        lines = [
            to_json(
                {
                    "prediction_id": pid,
                    "ts": now,
                    "variant": variant.name,
                    "model_sha256": variant.sha256,
                    "features": row,
                    **dict(zip(names, values, strict=True)),
                },
                inf_nan_mode="null",  # never NaN: the log stays strict JSON
            )
            for pid, row, *values in zip(ids, rows, *outputs.values(), strict=True)
        ]
        self.logger.info(b"\n".join(lines).decode())

    def close(self) -> None:
        for handler in self.logger.handlers:
            handler.close()
