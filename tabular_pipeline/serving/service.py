"""The BentoML service: typed predict/batch endpoints over the pipeline's model(s).

Imported by BentoML (at build time inside the package stage, at serve time
inside the Bento). The request schema, classes, variants and serve params
come from ``serving.json`` next to the package (see ``runtime.config_path``),
so the same code serves any dataset and model the pipeline trains.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, Any

import bentoml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tabular_pipeline.serving import explaining, middleware
from tabular_pipeline.serving.runtime import (
    MODEL_FILE,
    PredictionLog,
    Variant,
    bind_host,
    choose_variant,
    load_config,
    log_base,
    new_ids,
    resolve_api_key,
)
from tabular_pipeline.serving.schema import patch_openapi, request_model

log = logging.getLogger("tabular_pipeline.serving")

CONFIG = load_config()
SERVE = CONFIG.serve
Row = request_model(CONFIG.fields, name="Row")
Rows = Annotated[list[Row], Field(min_length=1, max_length=SERVE.max_batch_rows)]  # type: ignore[valid-type]
KEY_HEADER = SERVE.ab.key_header.lower()


def _one_pass_json(annotation: Any) -> Any:
    """BentoML's input model of a list body, parsed and validated in one pass.

    For a list ("root") input BentoML builds a TypeAdapter to read the JSON
    schema on every request, then ``json.loads``, then validates: together more
    than half of a 1,000-row batch's time outside the model. pydantic-core parses
    and validates the bytes at once, by the same annotation and rules; malformed
    JSON is a ValidationError (json_invalid), answered 400 as before.
    """

    def signature(self, rows, /, ctx):  # type: ignore[no-untyped-def]
        """Only its signature is read: BentoML's own descriptor of ``rows``."""

    # Real objects, not this module's postponed (string) annotations.
    signature.__annotations__ = {"rows": annotation, "ctx": bentoml.Context, "return": None}
    base = bentoml.IODescriptor.from_input(signature, skip_self=True, skip_names=("ctx",))
    adapter = TypeAdapter(annotation)

    def model_validate_json(cls: Any, json_data: str | bytes | bytearray, **_: Any) -> Any:
        return cls.model_construct(root=adapter.validate_json(json_data))

    return type(base.__name__, (base,), {"model_validate_json": classmethod(model_validate_json)})


BatchRows = _one_pass_json(Rows)
API_PATHS = ["/predict", "/predict_batch", "/explain", "/explain_batch"]


REGRESSION = CONFIG.task == "regression"


class Prediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    prediction_id: str  # joins a delayed label to this prediction (see docs/monitoring.md)
    label: str
    probabilities: dict[str, float]
    variant: str
    model_version: str


class BatchPrediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    prediction_ids: list[str]  # one per row, in order
    labels: list[str]
    probabilities: list[dict[str, float]]
    variant: str
    model_version: str


class ValuePrediction(BaseModel):
    """A regressor's answer: the predicted value in the target's units."""

    model_config = ConfigDict(protected_namespaces=())
    prediction_id: str  # joins a delayed label to this prediction (see docs/monitoring.md)
    prediction: float
    variant: str
    model_version: str


class BatchValuePrediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    prediction_ids: list[str]  # one per row, in order
    predictions: list[float]
    variant: str
    model_version: str


class Contribution(BaseModel):
    feature: str
    value: Any  # the row's input value
    contribution: float


class RowExplanation(BaseModel):
    prediction: str | float  # the label (classifier) or the value (regressor)
    output: str  # the explained output: the positive class, or the predicted class
    score: float  # base_value + sum(contributions): the model's output in `space`
    base_value: float
    space: str  # log-odds | raw score | probability | target units
    exact: bool
    method: str
    contributions: list[Contribution]  # every input column, largest |contribution| first


class Explanation(RowExplanation):
    model_config = ConfigDict(protected_namespaces=())
    variant: str
    model_version: str


class BatchExplanation(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    explanations: list[RowExplanation]
    variant: str
    model_version: str


# The response schema follows the task the Bento was built for (serving.json).
One = ValuePrediction if REGRESSION else Prediction
Many = BatchValuePrediction if REGRESSION else BatchPrediction


def _fields(row: Any) -> dict[str, Any]:
    """A validated row as a plain dict (no serialisation round trip)."""
    return dict(row.__dict__)


def after_response(ctx: bentoml.Context, task: Any, *args: Any) -> None:
    """Run ``task`` once the request's response is sent: the prediction log's records.

    Encoding 1,000 records (~550 KB of JSON) takes 2-4 ms, a sixth of the
    model's time for such a batch. As a background task of the request
    (Starlette's, which BentoML runs before the request completes, and a
    graceful shutdown waits for) it no longer delays the answer; no record
    is dropped, and each request's records stay one write, in row order.
    On the event loop, as before, not in a thread: a thread would only fight
    the next request for the GIL.
    """

    async def run() -> None:
        task(*args)

    ctx.response.background.add_task(run)


def _version(variant: Variant) -> str:
    return variant.model_tag


@bentoml.service(
    name=CONFIG.name,
    workers=SERVE.workers,
    threads=SERVE.threads,
    traffic={"timeout": 30},
    http={"host": bind_host(SERVE), "port": SERVE.port},
    logging={"access": {"enabled": SERVE.access_log}},
)
class TabularService:
    def __init__(self) -> None:
        import joblib
        from threadpoolctl import threadpool_limits

        from tabular_pipeline.serving.fast import FastPredictor

        self.variants = CONFIG.variants
        self.predictors = {}
        # Built once here, never per request (shap's import alone takes seconds).
        self.explainers: dict[str, tuple[Any, str]] = {}
        for variant in self.variants:
            stored = bentoml.models.get(variant.model_tag)
            pipeline = joblib.load(stored.path_of(MODEL_FILE))
            self.predictors[variant.name] = FastPredictor(pipeline, CONFIG.fields)
            self.explainers[variant.name] = explaining.build(
                pipeline, self.predictors[variant.name], CONFIG.explain, CONFIG.target
            )
            explainer = self.explainers[variant.name][0]
            log.info(
                "variant %s: model %s (sha256 %s), fast path %s, /explain %s",
                variant.name,
                variant.model_tag,
                variant.sha256[:12],
                "on" if self.predictors[variant.name].fast else "off",
                "off" if explainer is None else f"{explainer.method} in {explainer.space}",
            )
        # One OpenMP/BLAS thread per worker: HGB's per-tree OpenMP fan-out costs
        # more than it saves on a row, and spinning threads starve other requests.
        # After loading: the limit only reaches OpenMP runtimes already loaded.
        threadpool_limits(1)
        self.requests = bentoml.metrics.Counter(
            name="tabular_predictions_total",
            documentation="Predicted rows by model variant and endpoint",
            labelnames=["variant", "endpoint"],
        )
        self.latency = bentoml.metrics.Histogram(
            name="tabular_predict_seconds",
            documentation="Model time per request (featurize + predict), by variant",
            labelnames=["variant", "endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.prediction_log = None
        if SERVE.prediction_log.path:
            worker = int(getattr(bentoml.server_context, "worker_index", 0) or 0)
            # BentoML runs workers inside the Bento: relative paths are taken
            # from where `make serve` started (TABULAR_SERVE_CWD, set by cli.py),
            # or the image's data folder.
            self.prediction_log = PredictionLog(
                str(log_base() / SERVE.prediction_log.path),
                SERVE.prediction_log.max_bytes,
                SERVE.prediction_log.backups,
                worker=max(worker - 1, 0),
            )

    def _run(self, rows: list[dict[str, Any]], ctx: bentoml.Context, endpoint: str) -> BaseModel:
        """Predict ``rows`` with the request's variant; the response is the batch shape."""
        key = ctx.request.headers.get(KEY_HEADER)
        variant = choose_variant(self.variants, key, SERVE.ab.salt)
        predictor = self.predictors[variant.name]
        start = time.perf_counter()
        output = predictor.predict(rows) if REGRESSION else predictor.predict_proba(rows)
        self.latency.labels(variant=variant.name, endpoint=endpoint).observe(
            time.perf_counter() - start
        )
        self.requests.labels(variant=variant.name, endpoint=endpoint).inc(len(rows))
        # Random, not derived from the row: the same row sent twice is two predictions.
        ids = new_ids(len(rows))
        ctx.response.metadata["x-model-variant"] = variant.name
        if REGRESSION:
            values = output.tolist()
            if self.prediction_log is not None:
                after_response(ctx, self.prediction_log.write_values, rows, values, variant, ids)
            # Built from our own typed values: not validated again (~0.5 ms per 1,000 rows).
            return BatchValuePrediction.model_construct(
                prediction_ids=ids,
                predictions=values,
                variant=variant.name,
                model_version=_version(variant),
            )
        classes = predictor.classes
        # Python floats and ints in one call each: per-element numpy scalars cost
        # ~1 ms per 1,000 rows.
        labels = [classes[i] for i in output.argmax(axis=1).tolist()]
        probas = output.tolist()
        probabilities = [dict(zip(classes, p, strict=True)) for p in probas]
        if self.prediction_log is not None:
            after_response(ctx, self.prediction_log.write, rows, labels, probas, variant, ids)
        return BatchPrediction.model_construct(
            prediction_ids=ids,
            labels=labels,
            probabilities=probabilities,
            variant=variant.name,
            model_version=_version(variant),
        )

    def _explain(
        self, rows: list[dict[str, Any]], ctx: bentoml.Context, endpoint: str
    ) -> tuple[list[dict[str, Any]] | None, Variant]:
        key = ctx.request.headers.get(KEY_HEADER)
        variant = choose_variant(self.variants, key, SERVE.ab.salt)
        explainer = self.explainers[variant.name][0]
        ctx.response.metadata["x-model-variant"] = variant.name
        if explainer is None:
            ctx.response.status_code = 501
            return None, variant
        predictor = self.predictors[variant.name]
        start = time.perf_counter()
        proba = predictor.predict_proba(rows) if explainer.is_classifier else None
        answers = explaining.explain_rows(explainer, predictor, rows, proba)
        self.latency.labels(variant=variant.name, endpoint=endpoint).observe(
            time.perf_counter() - start
        )
        self.requests.labels(variant=variant.name, endpoint=endpoint).inc(len(rows))
        return answers, variant

    def _not_implemented(self, variant: Variant) -> Any:
        from starlette.responses import JSONResponse

        reason = self.explainers[variant.name][1]
        return JSONResponse(
            {"error": "no explainer for this model", "detail": reason}, status_code=501
        )

    @bentoml.api(route="/explain")
    async def explain(self, row: Row, /, ctx: bentoml.Context) -> Explanation:  # type: ignore[valid-type]
        """Explain one row: the prediction, base value and every feature's contribution."""
        answers, variant = self._explain([_fields(row)], ctx, "explain")
        if answers is None:
            return self._not_implemented(variant)
        return Explanation(**answers[0], variant=variant.name, model_version=_version(variant))

    @bentoml.api(route="/explain_batch", input_spec=BatchRows)
    async def explain_batch(self, rows: Rows, /, ctx: bentoml.Context) -> BatchExplanation:
        """Explain a list of rows (at most serve.max_batch_rows)."""
        answers, variant = self._explain([_fields(r) for r in rows], ctx, "explain_batch")
        if answers is None:
            return self._not_implemented(variant)
        return BatchExplanation(
            explanations=[RowExplanation(**a) for a in answers],
            variant=variant.name,
            model_version=_version(variant),
        )

    @bentoml.api(route="/predict")
    async def predict(self, row: Row, /, ctx: bentoml.Context) -> One:  # type: ignore[valid-type]
        """Predict one row: the label and class probabilities (classifier) or the
        predicted value (regressor), and the model version."""
        batch = self._run([_fields(row)], ctx, "predict")
        if isinstance(batch, BatchValuePrediction):
            return ValuePrediction(
                prediction_id=batch.prediction_ids[0],
                prediction=batch.predictions[0],
                variant=batch.variant,
                model_version=batch.model_version,
            )
        assert isinstance(batch, BatchPrediction)
        return Prediction(
            prediction_id=batch.prediction_ids[0],
            label=batch.labels[0],
            probabilities=batch.probabilities[0],
            variant=batch.variant,
            model_version=batch.model_version,
        )

    @bentoml.api(route="/predict_batch", input_spec=BatchRows)
    async def predict_batch(self, rows: Rows, /, ctx: bentoml.Context) -> Many:  # type: ignore[valid-type]
        """Predict a list of rows (at most serve.max_batch_rows)."""
        return self._run([_fields(r) for r in rows], ctx, "predict_batch")


_service: Any = TabularService  # the decorator returns a bentoml Service
# Starlette applies the list in order, first = outermost: auth runs first (an
# anonymous client cannot make us buffer a body), then the size limit, then
# the JSON-only check; the last two fix the Swagger page (offline) and the spec.
_service.add_asgi_middleware(
    middleware.ApiKeyAuth,
    api_key=lambda: resolve_api_key(SERVE),
    open_paths=SERVE.open_paths,
)
_service.add_asgi_middleware(middleware.BodyLimit, max_bytes=SERVE.max_body_bytes)
_service.add_asgi_middleware(
    # No body is parsed here: the list bodies' one-pass input model answers
    # malformed JSON with 400 itself (see _one_pass_json).
    middleware.JsonOnly,
    api_paths=API_PATHS,
    parse_paths=[],
)
_service.add_asgi_middleware(
    middleware.RewriteResponse, path="/", rewrite=middleware.strip_trackers
)


def _patched_spec(body: bytes) -> bytes:
    spec = json.loads(body)
    patched = patch_openapi(spec, CONFIG.fields, SERVE.max_batch_rows, API_PATHS)
    return json.dumps(patched).encode()


_service.add_asgi_middleware(middleware.RewriteResponse, path="/docs.json", rewrite=_patched_spec)
