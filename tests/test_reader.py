"""The guarded reader: every damaged raw file gives one line naming the file and the cause."""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabular_pipeline import stage
from tabular_pipeline.config import DataConfig
from tabular_pipeline.data.ingest import normalize
from tabular_pipeline.data.reader import read_user_table, revision_error, sniff_separator
from tabular_pipeline.errors import PipelineError

RNG_SEED = 19
ROWS = 400
READ = {"sep": ",", "skipinitialspace": True, "na_values": ["?"]}


def good_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.integers(17, 90, ROWS),
            "workclass": rng.choice(["Private", "State-gov", "?"], ROWS),
            "hours": rng.integers(1, 99, ROWS),
            "income": rng.choice(["<=50K", ">50K"], ROWS),
        }
    )


def csv_bytes(sep: str = ",", newline: str = "\n") -> bytes:
    return good_frame().to_csv(index=False, sep=sep, lineterminator=newline).encode()


def parquet_bytes(frame: pd.DataFrame | None = None) -> bytes:
    buffer = io.BytesIO()
    (good_frame() if frame is None else frame).to_parquet(buffer, index=False)
    return buffer.getvalue()


def zip_bytes(*members: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in members:
            archive.writestr(name, csv_bytes())
    return buffer.getvalue()


def cut(data: bytes, offsets: int = 3) -> list[int]:
    """Seeded truncation points, away from the first bytes that hold the magic number."""
    rng = np.random.default_rng(RNG_SEED)
    return sorted(int(x) for x in rng.integers(16, len(data) - 1, offsets))


GZ = gzip.compress(csv_bytes(), mtime=0)
BZ2 = bz2.compress(csv_bytes())
XZ = lzma.compress(csv_bytes())
PARQUET = parquet_bytes()
ZIP = zip_bytes("adult.csv")
PLAIN = csv_bytes()

# (case id, file name, bytes, message pattern after "<path>: ")
DAMAGES: list[tuple[str, str, bytes, str]] = [
    *(
        (f"gz-truncated-at-{n}", "adult.csv.gz", GZ[:n], r"gzip stream ends early.*truncated")
        for n in cut(GZ)
    ),
    *(
        (f"bz2-truncated-at-{n}", "adult.csv.bz2", BZ2[:n], r"bz2 stream ends early.*truncated")
        for n in cut(BZ2, 2)
    ),
    *(
        (f"xz-truncated-at-{n}", "adult.csv.xz", XZ[:n], r"xz stream ends early.*truncated")
        for n in cut(XZ, 2)
    ),
    *(
        (f"parquet-truncated-at-{n}", "adult.parquet", PARQUET[:n], r"footer is missing.*truncated")
        for n in cut(PARQUET, 2)
    ),
    (
        "zip-truncated",
        "adult.csv.zip",
        ZIP[: len(ZIP) // 2],
        r"the file is damaged: not valid zip data \(File is not a zip file\)",
    ),
    (
        "csv-truncated-mid-line",
        "adult.csv",
        PLAIN[: PLAIN.rindex(b",", 0, len(PLAIN) // 2)],
        r"last line has \d of 4 fields and no line end.*truncated",
    ),
    (
        "gz-corrupted-crc",
        "adult.csv.gz",
        GZ[:-8] + bytes(b ^ 0xFF for b in GZ[-8:-4]) + GZ[-4:],
        r"damaged: not valid gzip data \(CRC check failed",
    ),
    (
        "random-bytes.csv.gz",
        "adult.csv.gz",
        np.random.default_rng(RNG_SEED).bytes(3000),
        r"unrecognised binary data but its name says gzip-compressed",
    ),
    (
        "random-bytes.csv",
        "adult.csv",
        np.random.default_rng(RNG_SEED).bytes(3000),
        r"unrecognised binary data but its name says plain text",
    ),
    (
        "random-bytes.parquet",
        "adult.parquet",
        np.random.default_rng(RNG_SEED).bytes(3000),
        r"unrecognised binary data but its name says a Parquet file",
    ),
    (
        "zip-named-gz",
        "adult.csv.gz",
        ZIP,
        r"is a zip archive but its name says gzip-compressed.*rename it to adult\.csv\.zip",
    ),
    (
        "parquet-named-csv",
        "adult.csv",
        PARQUET,
        r"is a Parquet file but its name says plain text.*rename it to adult\.parquet",
    ),
    (
        "gzip-named-csv",
        "adult.csv",
        GZ,
        r"is gzip-compressed but its name says plain text.*rename it to adult\.csv\.gz",
    ),
    (
        "html-page-named-csv-gz",
        "adult.csv.gz",
        b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n",
        r"is an HTML page .* but its name says gzip-compressed; download the file again",
    ),
    ("zero-bytes", "adult.csv.gz", b"", r"the file is empty \(0 bytes"),
    ("zero-bytes-parquet", "adult.parquet", b"", r"the file is empty \(0 bytes"),
    ("empty-inside-gz", "adult.csv.gz", gzip.compress(b"", mtime=0), r"has no content"),
    (
        "header-only",
        "adult.csv",
        b"age,workclass,hours,income\n",
        r"header \(4 columns\) but no data rows",
    ),
    (
        "header-only-gz",
        "adult.csv.gz",
        gzip.compress(b"age,workclass,hours,income\n", mtime=0),
        r"no data rows",
    ),
    (
        "semicolon-separated",
        "adult.csv.gz",
        gzip.compress(csv_bytes(sep=";"), mtime=0),
        r"read 1 column with sep=','; the file looks ';'-separated.*"
        r"set data\.source\.read\.sep: ';'",
    ),
    (
        "tab-separated",
        "adult.csv",
        csv_bytes(sep="\t"),
        r"read 1 column with sep=','; the file looks '\\t'-separated",
    ),
    (
        "ragged-line",
        "adult.csv",
        b"age,workclass,hours,income\n39,Private,40,<=50K\n50,Private,13,>50K,extra,x\n",
        r"line 3 has 6 fields but the header has 4",
    ),
    (
        "latin-1",
        "adult.csv",
        "age,workclass,hours,income\n39,Privé,40,<=50K\n".encode("latin-1"),
        r"cannot decode as utf-8 text .*set data\.source\.read\.encoding",
    ),
    (
        "utf-16",
        "adult.csv",
        csv_bytes().decode().encode("utf-16"),
        r"UTF-16 text; set data\.source\.read\.encoding: utf-16",
    ),
    (
        "duplicate-header",
        "adult.csv",
        b"age,workclass,age,income\n39,Private,40,<=50K\n",
        r"names column 'age' twice \(columns 1 and 3\)",
    ),
    (
        "zip-with-two-files",
        "adult.csv.zip",
        zip_bytes("a.csv", "b.csv"),
        r"zip archive must hold exactly one CSV file",
    ),
]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "raw" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def assert_one_line(exc: PipelineError, path: Path, pattern: str) -> None:
    message = str(exc)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert re.search(pattern, message), message


@pytest.mark.parametrize(
    ("name", "data", "pattern"), [d[1:] for d in DAMAGES], ids=[d[0] for d in DAMAGES]
)
def test_damaged_file_gives_one_line(tmp_path: Path, name: str, data: bytes, pattern: str) -> None:
    path = write(tmp_path, name, data)
    with pytest.raises(PipelineError) as info:
        read_user_table(path, READ)
    assert_one_line(info.value, path, pattern)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("adult.csv", PLAIN),
        ("adult.csv.gz", GZ),
        ("adult.csv.bz2", BZ2),
        ("adult.csv.xz", XZ),
        ("adult.csv.zip", ZIP),
        ("adult.parquet", PARQUET),
        ("bom-crlf.csv", b"\xef\xbb\xbf" + csv_bytes(newline="\r\n")),
        ("bom-crlf.csv.gz", gzip.compress(b"\xef\xbb\xbf" + csv_bytes(newline="\r\n"), mtime=0)),
        ("no-final-newline.csv", PLAIN.rstrip(b"\n")),
    ],
    ids=lambda value: value if isinstance(value, str) else "",  # bytes differ per process (zip)
)
def test_sound_files_read_identically(tmp_path: Path, name: str, data: bytes) -> None:
    frame = read_user_table(write(tmp_path, name, data), READ)
    expected = good_frame()
    if not name.endswith(".parquet"):
        expected = pd.read_csv(io.BytesIO(PLAIN), **READ)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(frame, expected)
    assert list(frame.columns) == ["age", "workclass", "hours", "income"]  # no BOM, no \r


def test_not_found_directory_unknown_format_and_bad_option(tmp_path: Path) -> None:
    cases: list[tuple[Path, dict[str, object], str]] = [
        (tmp_path / "missing.csv", READ, r"file not found"),
        (tmp_path / "folder.csv", READ, r"is a directory, not a file"),
        (write(tmp_path, "t.xlsx", b"x"), READ, r"unknown format"),
        (
            write(tmp_path, "t.csv", PLAIN),
            {"sepp": ";"},
            r"data\.source\.read\.sepp: not an option",
        ),
    ]
    (tmp_path / "folder.csv").mkdir()
    for path, options, pattern in cases:
        with pytest.raises(PipelineError, match=pattern) as info:
            read_user_table(path, options)
        assert "\n" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "adult.csv", PLAIN)
    path.chmod(0)
    try:
        with pytest.raises(PipelineError) as info:
            read_user_table(path, READ)
    finally:
        path.chmod(0o644)
    assert_one_line(info.value, path, r"permission denied; give your user read access")


def test_label_names_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "batch.csv", b"")
    with pytest.raises(PipelineError, match=rf"^drift\.current: {path}: the file is empty"):
        read_user_table(path, READ, label="drift.current")


def cfg(**kwargs: object) -> DataConfig:
    base = {"name": "t", "raw_dir": "raw", "target": "income", "schema": "conf/data/schema/t.yaml"}
    return DataConfig(**(base | kwargs))  # type: ignore[arg-type]


def test_names_colliding_after_normalisation_name_both_originals() -> None:
    frame = pd.DataFrame({"Hours Per Week": [1], "hours-per-week": [2], "income": ["a"]})
    with pytest.raises(PipelineError) as info:
        normalize(frame, cfg(), "raw/adult.csv")
    assert str(info.value) == (
        "raw/adult.csv: columns 'Hours Per Week' and 'hours-per-week' both become "
        "'hours_per_week' after normalisation; rename one in the file or with data.rename"
    )


@pytest.mark.parametrize(
    ("column", "values", "kind", "pattern"),
    [
        (
            "age",
            ["39", "forty", "50"],
            "int",
            r"column 'age' holds object values such as \['forty'\]",
        ),
        (
            "age",
            pd.to_datetime(["2020-01-01"] * 3),
            "float",
            r"column 'age' holds datetime64\[ns\]",
        ),
        (
            "flag",
            ["yes", "maybe", "no"],
            "bool",
            r"column 'flag' holds object values such as \['maybe'\]",
        ),
        ("city", [[1], [2], [3]], "category", r"column 'city' holds nested or binary values"),
    ],
)
def test_parquet_with_wrong_column_type(
    tmp_path: Path, column: str, values: object, kind: str, pattern: str
) -> None:
    frame = pd.DataFrame({column: values, "income": ["a", "b", "a"]})
    path = write(tmp_path, "adult.parquet", parquet_bytes(frame))
    raw = read_user_table(path)
    with pytest.raises(PipelineError) as info:
        normalize(raw, cfg(types={column: kind}), str(path), typed=True)
    assert_one_line(
        info.value, path, pattern + rf".*schema \(conf/data/schema/t\.yaml\) declares {kind}"
    )


def test_parquet_with_castable_types_passes_and_csv_stays_lenient(tmp_path: Path) -> None:
    frame = pd.DataFrame({"age": ["39", "50", None], "income": ["a", "b", "a"]})
    out = normalize(frame, cfg(types={"age": "int"}), "x.parquet", typed=True)
    assert str(out["age"].dtype) == "Int64"
    lenient = pd.DataFrame({"age": ["39", "forty", "50"], "income": ["a", "b", "a"]})
    assert normalize(lenient, cfg(types={"age": "int"}), "x.csv")["age"].dtype == object


@pytest.mark.parametrize(
    ("lines", "exclude", "found"),
    [
        (["a;b;c", "1;2;3", "4;5;6"], ",", ";"),
        (["a;b", '"x;y";2'], ",", ";"),  # quoted separators are ignored
        (["a|b", "1|2"], ",", "|"),
        (["a,b", "1,2"], ",", None),  # the configured one is never suggested
        (["a;b", "1;2;3"], ",", None),  # inconsistent: no guess
    ],
)
def test_sniff_separator(lines: list[str], exclude: str, found: str | None) -> None:
    assert sniff_separator(lines, exclude) == found


def test_revision_error_is_one_line() -> None:
    exc = revision_error(
        "package.challenger.rev", "models/model.joblib", "v1", RuntimeError("no such\nrevision")
    )
    assert str(exc) == (
        "package.challenger.rev='v1': cannot read models/model.joblib at revision 'v1' "
        "(RuntimeError: no such revision); check that the revision exists (`git log`) and that "
        "its outputs are in the DVC cache or remote (`dvc fetch --rev v1` or `dvc pull`)"
    )


@pytest.mark.parametrize("case", ["gz-truncated", "zip-named-gz", "semicolon-separated"])
def test_stage_run_logs_exactly_one_error_and_exits_1(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, data, _ = next(d[1:] for d in DAMAGES if d[0].startswith(case))
    path = write(tmp_path, name, data)

    def main() -> None:
        read_user_table(path, READ)

    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as info:
        stage.run(main)
    assert info.value.code == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage().startswith(f"{path}: ")
    assert not any(r.exc_info for r in caplog.records)


def test_footer_option_still_reads(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", PLAIN + b"total rows: 400")
    frame = read_user_table(path, READ | {"skipfooter": 1, "engine": "python"})
    assert len(frame) == ROWS
