"""Files: atomic writes, checked loading of cached tensors, CSV and JSON tables, digests.

Every output is written to a temporary file in its own folder and renamed when complete, so a
killed stage leaves the previous file or none, never a truncated one.
"""
from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
import os
import time
from pathlib import Path

import torch

from netunits.errors import PipelineError, load_failure


def _temp_name(path):
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_stale_temps(*paths):
    """Delete temporary files a killed earlier run left next to these outputs."""
    for path in map(Path, paths):
        for stale in glob.glob(str(path.with_name(f".{path.name}.tmp-*"))):
            os.unlink(stale)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the same folder; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # Fault injection for the kill test (tests/test_pipeline.py): hold the finished
        # temporary file for this many seconds before the rename.
        hold = os.environ.get("NETUNITS_HOLD_BEFORE_RENAME")
        if hold:
            time.sleep(float(hold))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_torch(obj, path):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_text(text, path):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(obj, path):
    write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def read_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found; run `dvc repro` to create it") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc}); rerun `dvc repro -f` for the stage "
                            f"that writes it") from None


def _cell(value):
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_csv(rows, path):
    """rows: a list of dicts with the same keys; floats are written with 6 significant digits."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow([_cell(value) for value in row.values()])
    write_text(buffer.getvalue(), path)


def read_csv(path, numeric=True):
    """A table written by write_csv as a dict of column name -> list of values (floats when
    `numeric`, else strings)."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            names = next(reader)
            columns = {name: [] for name in names}
            for line in reader:
                for name, value in zip(names, line, strict=True):
                    columns[name].append(float(value) if numeric else value)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found; run `dvc repro` to create it") from None
    except (ValueError, StopIteration) as exc:
        raise PipelineError(f"{path}: not a {'numeric ' if numeric else ''}CSV table ({exc}); rerun "
                            f"`dvc repro -f` for the stage that writes it") from None
    return columns


def file_sha256(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_checked(path, required, what):
    """torch.load a cached dict with weights_only=True and check that it holds `required`.

    `required` maps key -> a predicate on the value; any failure is one PipelineError line.
    """
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: {what} not found; run `dvc repro` to create it")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, wrong format, pickled code: all unusable
        # `dvc checkout <file>`: a plain `dvc checkout` also tries the other pipelines' outputs
        raise PipelineError(f"{path}: corrupt or not a {what} ({load_failure(exc)}); "
                            f"restore it with `dvc checkout {path}` or rebuild it with `dvc repro -f`") from None
    if not isinstance(obj, dict):
        raise PipelineError(f"{path}: not a {what} (expected a dict, found {type(obj).__name__})")
    for key, check in required.items():
        if key not in obj or not check(obj[key]):
            raise PipelineError(f"{path}: not a valid {what}: entry '{key}' is missing or malformed; "
                                f"rebuild it with `dvc repro -f`")
    return obj
