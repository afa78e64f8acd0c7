"""Where netunits.accel's speed and memory code meets the rest of the package: two places only.

- `apply(model)`, called where every model is built (netunits.models.registry.build_model) for
  the architectures that opt in (`Architecture.accelerated`): convolutions on small maps take
  one matrix product under CPU bf16 autocast (gemm_conv.py), and the max-pool keeps only its
  indices for the backward pass (maxpool.py). Both switch the module's class in place, so
  parameters and state-dict keys stay those of nn.Conv2d and nn.MaxPool2d; each module decides
  per call (device, autocast, grad mode) whether to take its fast path, so a model moved to
  another device needs nothing more.
- `TrainingHooks`, the training loop's one hook: Adam stepped per parameter from the backward
  pass (optimizer.py) and the C heap trimmed before each evaluation (memory.py).
"""
from __future__ import annotations

import torch
from torch import nn

from netunits.accel.gemm_conv import SmallMapConv2d
from netunits.accel.maxpool import MaxPool2d
from netunits.accel.memory import release_free_memory
from netunits.accel.optimizer import step_in_backward

SWITCHES = {nn.Conv2d: SmallMapConv2d, nn.MaxPool2d: MaxPool2d}


def apply(model: nn.Module) -> nn.Module:
    """Switch every plain nn.Conv2d and nn.MaxPool2d of `model` to its accelerated subclass, in
    place (parameters untouched); returns the model."""
    for module in model.modules():
        fast = SWITCHES.get(type(module))
        if fast is not None:
            module.__class__ = fast
    return model


class TrainingHooks:
    """What the training loop asks of accel: the optimizers (one Adam per parameter, stepped
    during the backward pass), the learning rate they use, and a call between training and
    evaluation. `remove()` takes the hooks off the model."""

    def __init__(self, model: nn.Module, lr: float, device: torch.device):
        self.optimizers, self._remove = step_in_backward(model, lr, device)

    def set_learning_rate(self, rate: float) -> None:
        for optimizer in self.optimizers:
            optimizer.param_groups[0]["lr"] = rate

    def before_evaluation(self) -> None:
        release_free_memory()

    def remove(self) -> None:
        self._remove()
