"""The training loop: Adam and cross-entropy, the learning rate constant (the ROF notebook's
recipe) or decayed along half a cosine, and a test evaluation after every epoch. The optimizers
come from netunits.accel's training hooks (one Adam per parameter, stepped from the backward
pass)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from netunits.accel.training_hooks import TrainingHooks
from netunits.activations import pooled_features
from netunits.errors import PipelineError
from netunits.models.inputs import images_to_input
from netunits.runtime import autocast, progress


def accuracy_and_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return (float((logits.argmax(1) == labels).double().mean()),
            float(torch.nn.functional.cross_entropy(logits.double(), labels)))


def learning_rate(step: int, n_steps: int, lr: float, schedule: str) -> float:
    """The learning rate for training step `step` (0-based) of `n_steps`: constant, or a
    half-cosine from `lr` down towards 0 over the whole run (one value per step)."""
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / n_steps))


def train_model(model: torch.nn.Module, train: Mapping[str, Any], test: Mapping[str, Any], *, epochs: int,
                batch_size: int, lr: float, lr_schedule: str, seed: int, device: torch.device, precision: str,
                eval_batch_size: int, input_spec: Mapping[str, Any] | None = None) -> list[dict]:
    """Train in place; return the history (a list of per-epoch dicts).

    train, test: prepared subsets (images uint8 N x C x S x S, labels). Shuffling uses its own
    generator seeded by `seed`. A non-finite loss stops training with a PipelineError, so no
    checkpoint of a diverged model is ever written.
    """
    hooks = TrainingHooks(model, lr, device)
    try:
        return _train_epochs(model, train["images"], train["labels"], test, hooks, epochs=epochs,
                             batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, seed=seed, device=device,
                             precision=precision, eval_batch_size=eval_batch_size, input_spec=input_spec)
    finally:
        hooks.remove()


def evaluate(model: torch.nn.Module, subset: Mapping[str, Any], batch_size: int, device: torch.device,
             precision: str, input_spec: Mapping[str, Any] | None = None, desc: str = "test") -> tuple[float, float]:
    """(accuracy, loss) of the model on a prepared subset, in eval mode."""
    _, logits = pooled_features(model, subset["images"], [], batch_size, device, precision, input_spec, desc)
    return accuracy_and_loss(logits, subset["labels"])


def _train_epochs(model, images, labels, test, hooks, *, epochs, batch_size, lr, lr_schedule, seed, device,
                  precision, eval_batch_size, input_spec):
    shuffle = torch.Generator().manual_seed(seed)
    n_batches = (len(labels) + batch_size - 1) // batch_size
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        permutation = torch.randperm(len(labels), generator=shuffle)
        loss_sum, correct = 0.0, 0
        for step in progress(range(n_batches), f"epoch {epoch}/{epochs}"):
            batch = permutation[step * batch_size:(step + 1) * batch_size]
            y = labels[batch].to(device)
            # Memory: each gradient is freed as soon as its parameter is stepped (TrainingHooks),
            # and the fp32 input is not kept through the backward pass; the first convolution
            # saves its own bf16 copy.
            rate = learning_rate((epoch - 1) * n_batches + step, epochs * n_batches, lr, lr_schedule)
            hooks.set_learning_rate(rate)
            with autocast(device, precision):
                logits = model(images_to_input(images[batch], device, channels_last=True, spec=input_spec))
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise PipelineError(f"train: the loss became {loss.item()} at epoch {epoch}, batch {step + 1}; "
                                    f"no checkpoint written; lower 'train.lr' (now {lr})")
            loss.backward()                 # steps every parameter on the way (TrainingHooks)
            loss_sum += loss.item() * len(batch)
            correct += int((logits.argmax(1) == y).sum())
        hooks.before_evaluation()
        test_accuracy, test_loss = evaluate(model, test, eval_batch_size, device, precision, input_spec)
        history.append({"epoch": epoch, "loss": loss_sum / len(labels), "train_accuracy": correct / len(labels),
                        "test_accuracy": test_accuracy, "test_loss": test_loss})
        print(f"epoch {epoch}: loss {history[-1]['loss']:.4f}, running train accuracy "
              f"{history[-1]['train_accuracy']:.4f}, test accuracy {test_accuracy:.4f}")
    return history
