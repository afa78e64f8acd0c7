"""The checkpoint file that train writes: what every later stage needs to rebuild or read the
model, so none of them holds a constant about it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from netunits.files import file_sha256, load_checked

CHECKPOINT_KEYS = {
    "arch": lambda v: isinstance(v, str),
    "n_classes": lambda v: isinstance(v, int) and v > 0,
    "in_channels": lambda v: isinstance(v, int) and v > 0,
    "input": lambda v: isinstance(v, dict) and {"channels", "norm", "mean", "std"} <= set(v),
    "image_size": lambda v: isinstance(v, int) and v > 0,
    "dataset": lambda v: isinstance(v, str),
    "state_dict": lambda v: isinstance(v, dict) and "fc.weight" in v and "fc.bias" in v,
}


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """The checked checkpoint dict, without building the model (for stages that need only its
    final layer); the file's sha256 is under 'sha256'."""
    checkpoint = load_checked(path, CHECKPOINT_KEYS, "model checkpoint")
    checkpoint["sha256"] = file_sha256(path)
    return checkpoint
