"""The one door through which a user's table enters the pipeline.

Raw files are the part of the pipeline a user edits by hand: copied from a
laptop, downloaded, exported from a spreadsheet. When one is damaged, pandas,
gzip and pyarrow answer with a 20-line traceback that ends in something like
``EOFError: Compressed file ended before the end-of-stream marker was
reached``, or worse, succeed and hand ``validate`` a one-column table that
fails 59 expectations. :func:`read_user_table` turns every such case into one
line: the file, what is wrong in plain words, and the likely fix.

Only the library calls are guarded (``_call``); a bug in our own code
outside them still shows its traceback. Every stage that reads a file a user
supplies (``ingest``'s raw files, ``drift.current``, monitoring batches and
labels) calls :func:`read_user_table`; anything read from another git
revision through ``dvc.api`` reports its failure with :func:`revision_error`.
"""

from __future__ import annotations

import bz2
import gzip
import inspect
import io
import logging
import lzma
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pandas as pd

from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".csv", ".txt", ".data", ".test", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Container named by the last suffix, as pandas infers compression from it.
COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip"}
MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"(\xb5/\xfd", "zstd"),
    (b"PAR1", "parquet"),
)
DESCRIBE = {
    "gzip": "gzip-compressed",
    "zip": "a zip archive",
    "bz2": "bz2-compressed",
    "xz": "xz-compressed",
    "zstd": "zstd-compressed",
    "parquet": "a Parquet file",
    "html": "an HTML page (a failed download or an error page?)",
    "utf16": "UTF-16 text",
    "binary": "unrecognised binary data",
    "text": "plain text",
}
# What to rename a file to, for a content we can read.
SUFFIX_FOR = {"gzip": ".gz", "zip": ".zip", "bz2": ".bz2", "xz": ".xz", "parquet": ".parquet"}
SEPARATORS = (",", ";", "\t", "|")
HEAD_BYTES = 8192
# Options the duplicate-header read must not inherit: it wants row 0 as text.
HEADER_READ_DROP = (
    "usecols",
    "dtype",
    "converters",
    "index_col",
    "nrows",
    "chunksize",
    "iterator",
    "skipfooter",  # pandas refuses it with nrows
)
TRUNCATED = "the file is truncated (an interrupted copy or download?); copy it again"


def read_user_table(
    path: Path,
    read_kwargs: Mapping[str, Any] | None = None,
    *,
    label: str | None = None,
    read_key: str = "data.source.read",
    min_columns: int = 2,
) -> pd.DataFrame:
    """Read a user's CSV (plain, .gz, .bz2, .xz or .zip) or Parquet file, or fail in one line.

    ``read_kwargs`` go to ``pandas.read_csv`` (ignored for Parquet);
    ``read_key`` is the config key that holds them, named in fixes ("set
    data.source.read.sep"). ``label`` (e.g. ``"drift.current"``) prefixes
    messages, to say which setting named the file. A table with fewer than
    ``min_columns`` columns is refused: with a wrong separator pandas reads
    each line as one column, and a classification table needs at least a
    target and a feature. The result has at least one data row and no
    repeated column names; types are left to the caller (``ingest.normalize``).
    Raises :class:`PipelineError` for anything wrong with the file or its
    read options.
    """
    prefix = f"{label}: {path}" if label else str(path)
    kwargs = dict(read_kwargs or {})
    if not path.exists():
        raise PipelineError(f"{prefix}: file not found")
    if path.is_dir():
        raise PipelineError(f"{prefix}: is a directory, not a file; name a file inside it")
    fmt = table_format(path)
    if fmt is None:
        raise PipelineError(
            f"{prefix}: unknown format (expected .csv, .csv.gz/.bz2/.xz/.zip or .parquet)"
        )
    expected = "parquet" if fmt == "parquet" else _expected_container(path, kwargs)
    head = _read_head(path, prefix)
    if not head:
        raise PipelineError(
            f"{prefix}: the file is empty (0 bytes; an interrupted copy or download?); "
            "copy it again"
        )
    _check_magic(prefix, path, head, expected, kwargs, read_key)
    if fmt == "parquet":
        frame = _read_parquet(path, prefix)
    else:
        _check_read_options(prefix, kwargs, read_key)
        frame = _read_csv(path, prefix, kwargs, expected, read_key)
    _check_content(path, prefix, frame, kwargs, expected, read_key, min_columns)
    return frame


def table_format(path: Path) -> str | None:
    """``"parquet"``, ``"csv"`` or None (unknown), from the file name."""
    suffixes = [s.lower() for s in path.suffixes]
    if any(s in suffixes for s in PARQUET_SUFFIXES):
        return "parquet"
    if any(s in suffixes for s in TEXT_SUFFIXES):
        return "csv"
    return None


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (library messages often span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def revision_error(key: str, path: str, rev: str, exc: BaseException) -> PipelineError:
    """One line for a file that ``dvc.api`` could not read at a git revision."""
    return PipelineError(
        f"{key}={rev!r}: cannot read {path} at revision {rev!r} ({type(exc).__name__}: "
        f"{one_line(exc)}); check that the revision exists (`git log`) and that its "
        f"outputs are in the DVC cache or remote (`dvc fetch --rev {rev}` or `dvc pull`)"
    )


def _expected_container(path: Path, kwargs: Mapping[str, Any]) -> str:
    option = kwargs.get("compression", "infer")
    if isinstance(option, Mapping):
        option = option.get("method", "infer")
    if option is None:
        return "text"
    if option != "infer":
        return str(option)
    return COMPRESSION.get(path.suffix.lower(), "text")


def _read_head(path: Path, prefix: str) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError as exc:
        raise PipelineError(f"{prefix}: {_explain_os(exc)}") from exc


def _explain_os(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "cannot be read: permission denied; give your user read access (chmod u+r)"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file; name a file inside it"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return f"cannot be read ({one_line(exc)}); check the disk, or copy the file again"


def _sniff_content(head: bytes) -> str:
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    start = head.lstrip()[:15].lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "html"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf16"
    if b"\x00" in head:
        return "binary"
    return "text"


def _check_magic(
    prefix: str,
    path: Path,
    head: bytes,
    expected: str,
    kwargs: Mapping[str, Any],
    read_key: str,
) -> None:
    """The first bytes say what a file is; the name only says what it should be."""
    found = _sniff_content(head)
    if found == expected:
        return
    encoding = str(kwargs.get("encoding") or "").lower().replace("_", "-")
    if expected == "text" and found == "utf16":
        if encoding.startswith(("utf-16", "utf16")):
            return
        raise PipelineError(f"{prefix}: the file is UTF-16 text; set {read_key}.encoding: utf-16")
    if expected == "text" and found == "binary" and encoding.startswith(("utf-16", "utf-32")):
        return
    if expected not in DESCRIBE:  # a compression pandas knows and we do not check
        return
    if found in SUFFIX_FOR:
        name = path.name
        if found == "parquet":
            name = path.name.split(".")[0]
        elif expected != "text" and path.suffix.lower() in SUFFIX_FOR.values():
            name = path.stem
        fix = (
            f"copy the right file again, or rename it to {name + SUFFIX_FOR[found]} "
            "(and update the config that names it)"
        )
    elif found == "html":
        fix = "download the file again"
    else:
        fix = "copy the right file again"
    what = "plain text" if expected == "text" else DESCRIBE[expected]
    raise PipelineError(f"{prefix}: the file is {DESCRIBE[found]} but its name says {what}; {fix}")


def _check_read_options(prefix: str, kwargs: Mapping[str, Any], read_key: str) -> None:
    allowed = inspect.signature(pd.read_csv).parameters
    unknown = sorted(k for k in kwargs if k not in allowed or k == "filepath_or_buffer")
    if unknown:
        raise PipelineError(
            f"{read_key}.{unknown[0]}: not an option of pandas.read_csv (reading {prefix})"
        )


READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,  # ParserError, EmptyDataError, UnicodeDecodeError, ArrowInvalid
    TypeError,  # a read option pandas rejects
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
)


def _call(
    prefix: str,
    describe: Callable[[BaseException], str],
    errors: tuple[type[BaseException], ...],
    read: Callable[[], pd.DataFrame],
) -> pd.DataFrame:
    """Library errors while reading a user's file become one line; ours pass through."""
    try:
        return read()
    except errors as exc:
        raise PipelineError(f"{prefix}: {describe(exc)}") from exc


def _read_parquet(path: Path, prefix: str) -> pd.DataFrame:
    import pyarrow as pa

    def describe(exc: BaseException) -> str:
        if isinstance(exc, OSError) and exc.errno is not None:
            return _explain_os(exc)
        text = one_line(exc)
        if "magic bytes not found in footer" in text:
            return f"the Parquet footer is missing: {TRUNCATED}"
        return (
            f"cannot read as Parquet ({text}); the file is damaged or was written by a "
            "tool pyarrow cannot read: copy or write it again"
        )

    return _call(prefix, describe, (*READ_ERRORS, pa.ArrowException), lambda: pd.read_parquet(path))


def _read_csv(
    path: Path, prefix: str, kwargs: dict[str, Any], container: str, read_key: str
) -> pd.DataFrame:
    def describe(exc: BaseException) -> str:
        return _explain_csv(exc, path, kwargs, container, read_key)

    return _call(prefix, describe, READ_ERRORS, lambda: pd.read_csv(path, **kwargs))


def _explain_csv(
    exc: BaseException, path: Path, kwargs: Mapping[str, Any], container: str, read_key: str
) -> str:
    text = one_line(exc)
    if isinstance(exc, EOFError):
        return f"the {container} stream ends early: {TRUNCATED}"
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"cannot decode as {exc.encoding} text ({text}); set {read_key}.encoding to the "
            "file's encoding, e.g. latin-1 or cp1252"
        )
    if isinstance(exc, pd.errors.EmptyDataError):
        return "the file has no content (no header, no rows); copy the right file again"
    if isinstance(exc, pd.errors.ParserError):
        if "EOF inside string" in text:
            return (
                "a quoted field never ends (a stray quote, or the file is truncated); "
                f"check the file or {read_key}.quotechar"
            )
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
        if match:
            hint = _separator_hint(path, kwargs, container, read_key)
            return (
                f"line {match[2]} has {match[3]} fields but the header has {match[1]}"
                f"{hint or f'; fix that line or check {read_key}.sep and .quotechar'}"
            )
        return f"cannot parse as CSV ({text}); check the file and {read_key}"
    if isinstance(exc, (gzip.BadGzipFile, zlib.error, lzma.LZMAError, zipfile.BadZipFile)):
        return f"the file is damaged: not valid {container} data ({text}); copy it again"
    if isinstance(exc, OSError) and container == "bz2" and exc.errno is None:
        return f"the file is damaged: not valid {container} data ({text}); copy it again"
    if isinstance(exc, OSError):
        return _explain_os(exc)
    if "files found in ZIP file" in text:
        return f"the zip archive must hold exactly one CSV file ({text}); re-pack it with one"
    if isinstance(exc, TypeError):
        return f"{read_key} has an option pandas.read_csv rejects ({text})"
    return f"cannot parse as CSV ({text}); check the file and {read_key}"


@contextmanager
def _open_text(path: Path, container: str, encoding: str) -> Iterator[IO[str]]:
    """The file's text, decompressed the way pandas would."""
    if container == "zip":
        with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as raw:
            yield io.TextIOWrapper(raw, encoding=encoding, errors="replace")
        return
    opener: Any = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(container, open)
    with opener(path, "rt", encoding=encoding, errors="replace") as fh:
        yield fh


def _first_lines(path: Path, container: str, kwargs: Mapping[str, Any], n: int = 20) -> list[str]:
    encoding = str(kwargs.get("encoding") or "utf-8-sig")
    lines: list[str] = []
    try:
        with _open_text(path, container, encoding) as fh:
            for line in fh:
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                if len(lines) >= n:
                    break
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, zipfile.BadZipFile):
        pass  # a hint is best effort: what we have read so far is enough
    return lines


def sniff_separator(lines: list[str], exclude: str | None = None) -> str | None:
    """The candidate separator found the same number of times (>= 1) on every line.

    Quoted text is ignored. Among consistent candidates the most frequent
    wins; ``exclude`` (the configured one) is never suggested.
    """
    unquoted = [re.sub(r'"[^"]*"', "", line) for line in lines if line.strip()]
    if not unquoted:
        return None
    best, best_count = None, 0
    for sep in SEPARATORS:
        if sep == exclude:
            continue
        counts = {line.count(sep) for line in unquoted}
        if len(counts) == 1 and (count := counts.pop()) > best_count:
            best, best_count = sep, count
    return best


def _separator_hint(path: Path, kwargs: Mapping[str, Any], container: str, read_key: str) -> str:
    sep = kwargs.get("sep", kwargs.get("delimiter", ","))
    found = sniff_separator(_first_lines(path, container, kwargs), exclude=sep)
    if found is None:
        return ""
    return f"; the file looks {found!r}-separated, not {sep!r}: set {read_key}.sep: {found!r}"


def _check_content(
    path: Path,
    prefix: str,
    frame: pd.DataFrame,
    kwargs: Mapping[str, Any],
    container: str,
    read_key: str,
    min_columns: int,
) -> None:
    """What parsed without error may still not be a table: say so before validate does."""
    parquet = table_format(path) == "parquet"
    if frame.shape[1] < min_columns:
        sep = kwargs.get("sep", kwargs.get("delimiter", ","))
        if parquet:
            raise PipelineError(
                f"{prefix}: the file has {frame.shape[1]} column(s) {list(map(str, frame.columns))}, "
                f"a table needs at least {min_columns}"
            )
        hint = _separator_hint(path, kwargs, container, read_key)
        raise PipelineError(
            f"{prefix}: read {frame.shape[1]} column with sep={sep!r}"
            + (hint or f", a table needs at least {min_columns}; check {read_key}.sep")
        )
    if frame.empty:
        raise PipelineError(
            f"{prefix}: the file has a header ({frame.shape[1]} columns) but no data rows; "
            "copy the right file again"
        )
    if parquet:
        names = [str(c) for c in frame.columns]
    else:
        names = _raw_header(path, prefix, kwargs, container, read_key) or []
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise PipelineError(
                f"{prefix}: the header names column {name!r} twice (columns {seen[name]} "
                f"and {position}); rename one in the file"
            )
        seen[name] = position
    if not parquet and container == "text":
        _check_last_line(path, prefix, kwargs, len(frame.columns))


def _raw_header(
    path: Path, prefix: str, kwargs: Mapping[str, Any], container: str, read_key: str
) -> list[str] | None:
    """The header as written: pandas renames a repeated name 'a' to 'a.1' silently."""
    if "names" in kwargs or kwargs.get("header", "infer") not in ("infer", 0):
        return None
    options = {k: v for k, v in kwargs.items() if k not in HEADER_READ_DROP}
    options |= {"header": None, "nrows": 1, "dtype": str, "na_filter": False}

    def describe(exc: BaseException) -> str:
        return _explain_csv(exc, path, kwargs, container, read_key)

    row = _call(prefix, describe, READ_ERRORS, lambda: pd.read_csv(path, **options))
    return [str(v) for v in row.iloc[0].tolist()] if len(row) else None


def _check_last_line(path: Path, prefix: str, kwargs: Mapping[str, Any], n_columns: int) -> None:
    """A plain CSV cut mid-line still parses (pandas pads the row): catch it here."""
    sep = kwargs.get("sep", kwargs.get("delimiter", ","))
    if not isinstance(sep, str) or len(sep) != 1 or kwargs.get("skipfooter") or "comment" in kwargs:
        return  # a footer or a trailing comment is not a cut row
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - HEAD_BYTES))
        tail = fh.read()
    if tail.endswith((b"\n", b"\r")):
        return
    last = tail.rsplit(b"\n", 1)[-1]
    if b'"' in last:
        return
    fields = last.count(sep.encode()) + 1
    if fields < n_columns:
        raise PipelineError(
            f"{prefix}: the last line has {fields} of {n_columns} fields and no line end: "
            f"{TRUNCATED}"
        )
