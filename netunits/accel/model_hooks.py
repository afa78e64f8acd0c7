"""The one place a model gets netunits.accel's speed code: `apply(model)`, called where every
model is built (netunits.models.registry.build_model) for the architectures that opt in
(`Architecture.accelerated`).

Convolutions on small maps take one matrix product under CPU bf16 autocast (gemm_conv.py), and
the max-pool keeps only its indices for the backward pass (maxpool.py). Both switch a module's
class in place, so parameters and state-dict keys stay those of nn.Conv2d and nn.MaxPool2d, and
each module decides per call (device, autocast, grad mode) whether to take its fast path: a
model moved to another device needs nothing more.
"""
from __future__ import annotations

from torch import nn

from netunits.accel.gemm_conv import SmallMapConv2d
from netunits.accel.maxpool import MaxPool2d

SWITCHES = {nn.Conv2d: SmallMapConv2d, nn.MaxPool2d: MaxPool2d}


def apply(model: nn.Module) -> nn.Module:
    """Switch every plain nn.Conv2d and nn.MaxPool2d of `model` to its accelerated subclass, in
    place (parameters untouched); returns the model."""
    for module in model.modules():
        fast = SWITCHES.get(type(module))
        if fast is not None:
            module.__class__ = fast
    return model
