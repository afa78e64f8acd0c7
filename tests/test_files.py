"""netunits.files: atomic writes, stale temporaries, checked loading, CSV round trips."""
import hashlib
import os

import pytest
import torch

from netunits import files
from netunits.errors import PipelineError


def test_atomic_write_keeps_the_previous_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    files.write_json({"v": 1}, target)
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("killed half-way")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".model.pt.tmp-123").write_bytes(b"half")
    (tmp_path / "other.pt").write_bytes(b"keep")
    files.remove_stale_temps(tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt"]


def test_load_checked_refuses_corrupt_truncated_and_pickled_code(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.ones(3)}, good)
    assert files.load_checked(good, {"a": lambda v: v.shape == (3,)}, "thing")["a"].sum() == 3
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    # torch's reason in whole sentences, never cut mid-word
    with pytest.raises(PipelineError) as error:
        files.load_checked(truncated, {}, "thing")
    assert str(error.value) == (f"{truncated}: corrupt or not a thing (PytorchStreamReader failed reading zip archive: "
                                f"failed finding central directory.); restore it with `dvc checkout {truncated}` or "
                                f"rebuild it with `dvc repro -f`")
    code = tmp_path / "code.pt"
    torch.save({"a": os.getcwd, "b": torch.ones(1)}, code)  # a pickled function is refused by weights_only
    with pytest.raises(PipelineError) as error:
        files.load_checked(code, {}, "thing")
    # what was refused, without torch's advice to load it with weights_only=False (running its code)
    assert str(error.value).startswith(f"{code}: corrupt or not a thing (weights_only loading refused it: Trying to "
                                       f"load unsupported GLOBAL posix.getcwd whose module posix is blocked.); ")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(PipelineError, match=r"empty.pt: corrupt or not a thing \(EOFError\)"):
        files.load_checked(empty, {}, "thing")
    with pytest.raises(PipelineError, match="entry 'b' is missing or malformed"):
        files.load_checked(good, {"b": lambda v: True}, "thing")
    with pytest.raises(PipelineError, match="absent.pt: thing not found"):
        files.load_checked(tmp_path / "absent.pt", {}, "thing")


def test_csv_writes_six_significant_digits_and_reads_back(tmp_path):
    path = tmp_path / "t.csv"
    files.write_csv([{"n": 1, "x": 1 / 3, "role": "both"}, {"n": 2, "x": 2.0, "role": "a,b"}], path)
    assert path.read_text() == 'n,x,role\n1,0.333333,both\n2,2,"a,b"\n'
    assert files.read_csv(path, numeric=False) == {"n": ["1", "2"], "x": ["0.333333", "2"], "role": ["both", "a,b"]}
    files.write_csv([{"n": 1, "x": 0.5}], path)
    assert files.read_csv(path) == {"n": [1.0], "x": [0.5]}
    path.write_text("n,x\n1,abc\n")
    with pytest.raises(PipelineError, match="t.csv: not a numeric CSV table"):
        files.read_csv(path)


def test_read_json_errors_are_one_line(tmp_path):
    with pytest.raises(PipelineError, match="absent.json: file not found"):
        files.read_json(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PipelineError, match="bad.json: not valid JSON"):
        files.read_json(tmp_path / "bad.json")


def test_file_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"abc" * 1000)
    assert files.file_sha256(tmp_path / "f") == hashlib.sha256(b"abc" * 1000).hexdigest()
