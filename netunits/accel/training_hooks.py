"""The training loop's one hook into netunits.accel: Adam stepped per parameter from the backward
pass (optimizer.py) and the C heap trimmed before each evaluation (memory.py)."""
from __future__ import annotations

import torch
from torch import nn

from netunits.accel.memory import release_free_memory
from netunits.accel.optimizer import step_in_backward


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
        # glibc's free memory kept from training steps cannot serve the evaluation's differently
        # sized tensors; handed back, the heap does not grow
        release_free_memory()

    def remove(self) -> None:
        self._remove()
