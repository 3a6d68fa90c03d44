"""Serving units: generated request schema, exact fast path, A/B split, auth, archive."""

from __future__ import annotations

import asyncio
import io
import json
import lzma
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from tabular_pipeline.config import ColumnExpect, DataConfig, FeaturizeConfig
from tabular_pipeline.data.ingest import normalize, read_table
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tabular_pipeline.models.modeling import fit_pipeline
from tabular_pipeline.serving import middleware, package
from tabular_pipeline.serving.fast import FastPredictor
from tabular_pipeline.serving.runtime import (
    CONTAINER_DATA,
    CONTAINER_HOST,
    CWD_ENV,
    AuthConfigError,
    PredictionLog,
    Variant,
    bind_host,
    choose_variant,
    log_base,
    new_ids,
    resolve_api_key,
)
from tabular_pipeline.serving.schema import (
    build_field_specs,
    frame_to_rows,
    request_model,
)
from tabular_pipeline.serving.settings import ServeConfig
from tests.conftest import FIXTURE, shipped


@pytest.fixture(scope="module")
def adult(adult_cfg: DataConfig) -> pd.DataFrame:
    raw = pd.concat(
        read_table(FIXTURE / path, adult_cfg.source.read)
        for path in (adult_cfg.source.train, adult_cfg.source.test)
        if path is not None
    )
    frame = normalize(raw.sample(2000, random_state=0), adult_cfg).reset_index(drop=True)
    buffer = io.BytesIO()  # as split writes and train reads it
    frame.to_parquet(buffer, index=False)
    return pd.read_parquet(buffer)


def fitted(frame: pd.DataFrame, target: str, estimator: Any, featurizer: Any = None) -> Any:
    numeric, categorical = feature_columns(frame, target)
    featurizer = featurizer or build_featurizer(
        numeric, categorical, shipped("featurize", FeaturizeConfig)
    )
    featurizer.fit(frame.drop(columns=[target]))
    return fit_pipeline(featurizer, estimator, frame, target)


@pytest.fixture(scope="module")
def adult_pipeline(adult: pd.DataFrame, adult_cfg: DataConfig) -> Any:
    return fitted(adult.iloc[:1500], adult_cfg.target, HistGradientBoostingClassifier(max_iter=30))


def test_adult_schema_types_and_nullability(adult_pipeline: Any, adult_cfg: DataConfig) -> None:
    specs = {s.name: s for s in build_field_specs(adult_pipeline.steps[0][1], adult_cfg)}
    assert set(specs) == set(adult_cfg.types)
    assert specs["age"].kind == "integer" and not specs["age"].nullable
    assert (specs["age"].minimum, specs["age"].maximum) == (16, 100)
    assert specs["workclass"].kind == "category" and specs["workclass"].nullable
    assert "Private" in specs["workclass"].categories
    assert not specs["sex"].nullable and set(specs["sex"].categories) == {"Female", "Male"}

    Row = request_model(list(specs.values()))
    good = {n: (s.categories[0] if s.kind == "category" else 40) for n, s in specs.items()}
    assert Row.model_validate(good).age == 40
    schema = Row.model_json_schema()
    assert set(schema["required"]) == set(specs)
    assert schema["properties"]["age"]["type"] == "integer"
    assert {"type": "null"} in schema["properties"]["workclass"]["anyOf"]

    cases = {
        "missing": ({k: v for k, v in good.items() if k != "age"}, "missing", "age"),
        "wrong type": (good | {"age": "forty"}, "int_type", "age"),
        "not finite": (good | {"fnlwgt": float("nan")}, "int_type", "fnlwgt"),
        "null not allowed": (good | {"sex": None}, "string_type", "sex"),
        "unknown field": (good | {"income": ">50K"}, "extra_forbidden", "income"),
    }
    for case, (payload, rule, field) in cases.items():
        with pytest.raises(ValidationError) as err:
            Row.model_validate(payload)
        errors = err.value.errors()
        assert errors[0]["type"] == rule, case
        assert errors[0]["loc"] == (field,), case
    assert Row.model_validate(good | {"workclass": None}).workclass is None
    assert Row.model_validate(good | {"workclass": "Never-seen"}).workclass == "Never-seen"


def test_multiclass_schema_with_missing_values(toy_frame: pd.DataFrame) -> None:
    cfg = DataConfig(
        name="toy",
        target="label",
        types={"count": "int"},
        expect={"num": ColumnExpect(max_null_frac=0.2)},
        max_null_frac=0.0,
    )
    pipeline = fitted(toy_frame, "label", LogisticRegression(max_iter=500))
    specs = {s.name: s for s in build_field_specs(pipeline.steps[0][1], cfg)}
    assert list(specs) == ["num", "count", "colour"]
    assert (specs["num"].kind, specs["num"].nullable) == ("number", True)
    assert (specs["count"].kind, specs["count"].nullable) == ("integer", False)
    assert specs["colour"].categories == ["blue", "green", "red"]
    Row = request_model(list(specs.values()))
    with pytest.raises(ValidationError) as err:
        Row.model_validate({"num": float("inf"), "count": 1, "colour": "red"})
    assert err.value.errors()[0]["type"] == "finite_number"
    Row.model_validate({"num": None, "count": 1, "colour": "red"})
    # Served predictions equal the pipeline's on the frame, NaNs and all.
    predictor = FastPredictor(pipeline, list(specs.values()))
    assert predictor.fast
    rows = frame_to_rows(toy_frame, list(specs.values()))
    expected = pipeline.predict_proba(toy_frame.drop(columns=["label"]))
    assert np.array_equal(predictor.predict_proba(rows), expected)
    assert predictor.classes == ["a", "b", "c"]


@pytest.mark.parametrize(
    "estimator",
    [
        HistGradientBoostingClassifier(max_iter=30, random_state=0),
        LogisticRegression(max_iter=1000),
        RandomForestClassifier(n_estimators=10, random_state=0),
    ],
    ids=["hgb", "logreg", "forest"],
)
def test_fast_path_is_exact_on_adult(
    adult: pd.DataFrame, adult_cfg: DataConfig, estimator: Any
) -> None:
    pipeline = fitted(adult.iloc[:1500], adult_cfg.target, estimator)
    specs = build_field_specs(pipeline.steps[0][1], adult_cfg)
    test = adult.iloc[1500:].reset_index(drop=True)
    test.loc[::7, "occupation"] = None  # missing and unknown categories are served too
    test["native_country"] = test["native_country"].cat.add_categories(["Atlantis"])
    test.loc[::11, "native_country"] = "Atlantis"
    predictor = FastPredictor(pipeline, specs)
    assert predictor.fast, predictor.reason
    assert predictor.compiled_estimator == isinstance(estimator, HistGradientBoostingClassifier)
    rows = frame_to_rows(test, specs)
    expected = pipeline.predict_proba(test.drop(columns=[adult_cfg.target]))
    assert np.array_equal(predictor.predict_proba(rows), expected)
    # One row alone (BLAS may round a 1-row product differently from a batch).
    one = pipeline.predict_proba(test.drop(columns=[adult_cfg.target]).iloc[:1])
    assert np.array_equal(predictor.predict_proba(rows[:1]), one)
    few = pipeline.predict_proba(test.drop(columns=[adult_cfg.target]).iloc[:9])
    assert np.array_equal(predictor.predict_proba(rows[:9]), few)


def test_unknown_featurizer_step_falls_back_to_the_pipeline(toy_frame: pd.DataFrame) -> None:
    from sklearn.compose import ColumnTransformer

    featurizer = ColumnTransformer(
        [("num", FunctionTransformer(np.nan_to_num), ["num", "count"])], remainder="drop"
    )
    pipeline = fitted(toy_frame, "label", LogisticRegression(max_iter=500), featurizer)
    cfg = DataConfig(name="toy", target="label", max_null_frac=0.5)
    specs = build_field_specs(pipeline.steps[0][1], cfg)
    predictor = FastPredictor(pipeline, specs)
    assert not predictor.fast and "FunctionTransformer" in predictor.reason
    rows = frame_to_rows(toy_frame, specs)
    expected = pipeline.predict_proba(toy_frame.drop(columns=["label", "colour"]))
    assert np.array_equal(predictor.predict_proba(rows), expected)


def test_ab_split_is_sticky_and_shares_traffic() -> None:
    variants = [Variant("champion", "m:1", "a" * 64, 0.8), Variant("challenger", "m:2", "b", 0.2)]
    picks = [choose_variant(variants, f"user-{i}", "ab").name for i in range(1000)]
    assert 0.17 < picks.count("challenger") / 1000 < 0.23
    again = [choose_variant(variants, f"user-{i}", "ab").name for i in range(1000)]
    assert picks == again
    assert choose_variant(variants, None, "ab").name == "champion"
    reshuffled = [choose_variant(variants, f"user-{i}", "other").name for i in range(1000)]
    assert reshuffled != picks


def test_api_key_is_required_unless_auth_is_none(tmp_path: Path) -> None:
    serve = shipped("serve", ServeConfig)
    with pytest.raises(AuthConfigError, match="TABULAR_API_KEY"):
        resolve_api_key(serve, environ={})
    assert resolve_api_key(serve, environ={"TABULAR_API_KEY": " s3cret\n"}) == "s3cret"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    serve.api_key_file = str(key_file)
    assert resolve_api_key(serve, environ={}) == "from-file"
    # A mounted secret named by $TABULAR_API_KEY_FILE; the variable itself still wins.
    mounted = tmp_path / "mounted"
    mounted.write_text("mounted\n")
    assert resolve_api_key(serve, environ={"TABULAR_API_KEY_FILE": str(mounted)}) == "mounted"
    both = {"TABULAR_API_KEY": "env", "TABULAR_API_KEY_FILE": str(mounted)}
    assert resolve_api_key(serve, environ=both) == "env"
    with pytest.raises(AuthConfigError, match="missing or empty"):
        resolve_api_key(serve, environ={"TABULAR_API_KEY_FILE": str(tmp_path / "absent")})
    serve.auth = "none"
    assert resolve_api_key(serve, environ={}) is None


async def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    sent: list[dict[str, Any]] = []
    chunks = [body[i : i + 10] for i in range(0, len(body), 10)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_auth_and_body_limit_middleware() -> None:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    app = middleware.ApiKeyAuth(
        middleware.BodyLimit(echo, max_bytes=50), api_key=lambda: "k", open_paths=["/livez"]
    )
    run = asyncio.run
    assert run(_call(app, "/predict", [], b"{}"))[0] == 401
    assert run(_call(app, "/predict", [(b"x-api-key", b"wrong")], b"{}"))[0] == 401
    assert run(_call(app, "/livez", [], b""))[0] == 200
    assert run(_call(app, "/predict", [(b"authorization", b"Bearer k")], b"{}")) == (200, b"{}")
    body = b"x" * 45
    assert run(_call(app, "/predict", [(b"x-api-key", b"k")], body)) == (200, body)
    # Over the limit: by declared length, and while streaming without one.
    big = b"x" * 51
    status, payload = run(
        _call(app, "/predict", [(b"x-api-key", b"k"), (b"content-length", b"51")], big)
    )
    assert status == 413 and "max_body_bytes=50" in json.loads(payload)["detail"]
    assert run(_call(app, "/predict", [(b"x-api-key", b"k")], big))[0] == 413


def test_docs_page_loses_its_tracker() -> None:
    html = (
        b"<head><script>(function(w){'https://www.googletagmanager.com/gtm.js'})</script>"
        b'<link href="./static_content/swagger-ui.css"></head><body><noscript>'
        b'<iframe src="https://www.googletagmanager.com/ns.html"></iframe></noscript>'
        b'<script src="./static_content/swagger-ui-bundle.js"> </script></body>'
    )
    out = middleware.strip_trackers(html)
    assert b"googletagmanager" not in out
    assert b"swagger-ui-bundle.js" in out and b"swagger-ui.css" in out


def test_repack_is_byte_stable(tmp_path: Path) -> None:
    def export(path: Path, when: int, stamp: str) -> None:
        with tarfile.open(path, "w:gz") as tar:
            for name, data in (
                ("bento.yaml", f"name: x\ncreation_time: '{stamp}'\n".encode()),
                ("src/a.py", b"print(1)\n"),
            ):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.uid, info.uname = len(data), when, 1000, "me"
                tar.addfile(info, io.BytesIO(data))

    export(tmp_path / "a.bento", 1, "2026-01-01T00:00:00")
    export(tmp_path / "b.bento", 2, "2026-11-23T15:00:00")
    for name in ("a", "b"):
        package.repack_deterministic(tmp_path / f"{name}.bento", tmp_path / f"{name}.out")
    assert (tmp_path / "a.out").read_bytes() == (tmp_path / "b.out").read_bytes()
    with tarfile.open(tmp_path / "a.out") as tar:
        text = tar.extractfile("bento.yaml").read().decode()  # type: ignore[union-attr]
    assert package.FIXED_TIME in text and "name: x" in text
    assert lzma.decompress((tmp_path / "a.out").read_bytes())[:9] == b"bento.yam"


def test_openapi_patch_documents_nullability_auth_and_errors(toy_frame: pd.DataFrame) -> None:
    from tabular_pipeline.serving.schema import patch_openapi

    cfg = DataConfig(name="toy", target="label", expect={"num": ColumnExpect(max_null_frac=0.2)})
    cfg.max_null_frac = 0.0
    pipeline = fitted(toy_frame, "label", LogisticRegression(max_iter=500))
    specs = build_field_specs(pipeline.steps[0][1], cfg)
    spec: dict[str, Any] = {
        "paths": {"/predict": {"post": {"responses": {"200": {}}}}},
        "components": {"schemas": {}},
    }
    out = patch_openapi(spec, specs, 7, ["/predict", "/predict_batch"])
    row = out["components"]["schemas"]["Row"]
    assert row["properties"]["num"] == {"type": "number", "nullable": True}
    assert "nullable" not in row["properties"]["colour"]
    assert row["additionalProperties"] is False and row["required"] == ["num", "count", "colour"]
    post = out["paths"]["/predict"]["post"]
    assert {"401", "413", "415"} <= set(post["responses"])
    assert post["security"] == [{"bearer": []}, {"apiKey": []}]


def test_prediction_ids_are_random_uuid4_hex() -> None:
    import uuid

    ids = new_ids(500)
    assert len(set(ids)) == 500 and new_ids(0) == []
    for pid in ids:
        parsed = uuid.UUID(hex=pid)
        assert parsed.hex == pid and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_prediction_log_writes_a_line_per_row_in_one_call(tmp_path: Path) -> None:
    """One write per request, the same records as one json.dumps per row (issue 26)."""
    log = PredictionLog(str(tmp_path / "p.jsonl"), max_bytes=10**6, backups=1)
    variant = Variant("champion", "m:1", "a" * 64, 1.0)
    rows = [{"age": 39, "sex": "Female"}, {"age": None, "sex": "Male"}]
    probas = np.array([[0.25, 0.75], [0.9, 0.1]])
    writes = []
    handler = log.logger.handlers[0]
    original = handler.emit
    handler.emit = lambda record: (writes.append(record), original(record))[1]  # type: ignore[method-assign]
    log.write(rows, ["b", "a"], probas, variant, ["id1", "id2"])
    log.write_values(rows, np.array([1.5, -2.0]), variant, ["id3", "id4"])
    log.close()
    assert len(writes) == 2
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["prediction_id"] for r in records] == ["id1", "id2", "id3", "id4"]
    assert records[0]["proba"] == [0.25, 0.75] and records[1]["features"] == rows[1]
    assert records[2]["prediction"] == 1.5 and "label" not in records[2]
    expected = {k: records[0][k] for k in records[0]}
    assert lines[0] == json.dumps(expected, allow_nan=False, separators=(",", ":"))
    # NaN is never written as invalid JSON: a strict reader gets null
    strict = PredictionLog(str(tmp_path / "q.jsonl"), 10**6, 1)
    strict.write(rows[:1], ["a"], np.array([[np.nan, 1.0]]), variant)
    strict.close()
    line = (tmp_path / "q.jsonl").read_text().strip()
    assert "NaN" not in line
    assert json.loads(line, parse_constant=lambda c: pytest.fail(c))["proba"] == [None, 1.0]


def test_container_defaults_differ_from_make_serve() -> None:
    """The image listens on every interface and logs under its data folder; make serve does not."""
    serve = shipped("serve", ServeConfig)
    assert serve.host == "127.0.0.1"
    assert bind_host(serve, environ={}) == "127.0.0.1"
    assert bind_host(serve, environ={"BENTOML_CONTAINERIZED": "true"}) == CONTAINER_HOST
    assert log_base(environ={}) == Path(".")
    assert log_base(environ={"BENTOML_CONTAINERIZED": "true"}) == Path(CONTAINER_DATA)
    both = {"BENTOML_CONTAINERIZED": "true", CWD_ENV: "/srv/logs"}
    assert log_base(environ=both) == Path("/srv/logs")
