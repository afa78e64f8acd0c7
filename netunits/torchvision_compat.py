"""torchvision on a CPU-only torch: the project's one shim, in this one place.

torchvision registers fake (meta) kernels for torchvision::nms and ::qnms at import time, which
fails with "operator torchvision::nms does not exist" when its compiled extension cannot load
(a CUDA wheel of torchvision beside a CPU wheel of torch). Defining the two op schemas is all
that registration needs; the ops themselves are never called by this project.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

from netunits.errors import PipelineError

_TORCHVISION_SHIM = []


def _torchvision_extension_loads():
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise PipelineError("torchvision is not installed; run `make run` or "
                            "`pip install -r requirements.txt`")
    libraries = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))
    if not libraries:
        return False
    try:
        torch.ops.load_library(libraries[0])
        return True
    except OSError:  # e.g. a CUDA build of torchvision next to a CPU build of torch
        return False


def _op_defined(name):
    namespace, op = name.split("::")
    try:
        getattr(getattr(torch.ops, namespace), op)
        return True
    except (AttributeError, RuntimeError):
        return False


def torchvision_models():
    """Import torchvision.models, defining the nms/qnms op schemas first if its C ops are missing."""
    if "torchvision" not in sys.modules and not _TORCHVISION_SHIM:
        if not _op_defined("torchvision::nms") and not _torchvision_extension_loads():
            library = torch.library.Library("torchvision", "DEF")
            library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TORCHVISION_SHIM.append(library)
    import torchvision.models
    return torchvision.models
