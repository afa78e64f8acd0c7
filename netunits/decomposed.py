"""The decomposed network of "Decomposing the Deep" (Badola et al., arXiv 2112.07719) and its
fine-tuning, the paper's last experiment.

The network is the model with its final layer replaced by one that reads, for each class c,
only the k units of its influential set S_c (netunits/methods/influence.py): logit_c = sum over
i of w[c, i] f[S_c[i]] + b_c, with w[c, i] and b_c starting at the trained final layer's
W[c, S_c[i]] and b_c. Fine-tuning trains the whole network end to end with Adam and
cross-entropy (the reference: lr 1e-4 and batch 64 for ResNet20 on CIFAR-10, where one epoch
takes the decomposed accuracy from 88.59% to 91.30-91.40% against 91.71% for the full network),
in train mode (batch norm statistics update), without data augmentation.

Test accuracy is measured as the influential_filters stage measures the decomposed accuracy:
pooled features at `layer` from netunits.activations.pooled_features (eval mode, the given
precision and batch size), then influence.decomposed_logits in float64 with the head's current
weights. Before any training, with the same features, that is the stage's number exactly.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from netunits.activations import pooled_features
from netunits.errors import PipelineError
from netunits.methods import influence
from netunits.models.inputs import images_to_input
from netunits.runtime import autocast, progress


class DecomposedHead(nn.Module):
    """logit_c = sum_i weight[c, i] * features[:, sets[c, i]] + bias[c]; only the k weights per
    class exist, so the other units can never enter a class's logit. Evaluated in fp32 even under
    autocast, as the registry's Float32Head."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, sets: torch.Tensor):
        super().__init__()
        self.n_units = weight.shape[1]
        self.register_buffer("sets", sets.clone().to(torch.int64))
        self.weight = nn.Parameter(weight.detach().float().gather(1, self.sets).clone())
        self.bias = nn.Parameter(bias.detach().float().clone())

    def full_weight(self) -> torch.Tensor:
        """The n_classes x n_units matrix: the k weights in place, zeros elsewhere."""
        full = torch.zeros(len(self.sets), self.n_units, dtype=self.weight.dtype, device=self.weight.device)
        return full.scatter(1, self.sets, self.weight)

    def forward(self, features):
        with torch.autocast(device_type=features.device.type, enabled=False):
            picked = features.float()[:, self.sets]                      # N x classes x k
            return (picked * self.weight).sum(dim=2) + self.bias


def check_sets(sets, n_classes: int, n_units: int, key: str = "influence.k") -> torch.Tensor:
    sets = torch.as_tensor(sets)
    if sets.dim() != 2 or sets.shape[0] != n_classes or not 1 <= sets.shape[1] <= n_units:
        raise PipelineError(f"params.yaml: '{key}': the class sets must be {n_classes} rows of 1 to {n_units} units "
                            f"(one row per class); got shape {tuple(sets.shape)}")
    if int(sets.min()) < 0 or int(sets.max()) >= n_units:
        raise PipelineError(f"params.yaml: '{key}': the class sets name unit {int(sets.max())}; the final layer "
                            f"reads units 0 to {n_units - 1}")
    if any(len(set(row.tolist())) != len(row) for row in sets):
        raise PipelineError(f"params.yaml: '{key}': a class set names a unit twice")
    return sets


def decompose(model: nn.Module, sets: torch.Tensor) -> nn.Module:
    """A copy of the model (final layer `fc`) whose final layer reads only each class's set."""
    weight, bias = model.fc.weight, model.fc.bias
    sets = check_sets(sets, *weight.shape)
    network = copy.deepcopy(model)
    network.fc = DecomposedHead(weight, bias, sets)
    return network


def evaluate_decomposed(network: nn.Module, subset: dict, *, batch_size: int, device: torch.device, precision: str,
                        input_spec: dict | None = None, layer: str = "avgpool") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the decomposed network on a prepared subset (images uint8,
    labels), through influence.decomposed_logits (see the module's docstring)."""
    features, _ = pooled_features(network, subset["images"], [layer], batch_size, device, precision, input_spec,
                                  "decomposed test", key="finetune.layer")
    head = network.fc
    with torch.no_grad():
        mask = influence.membership(head.sets.cpu(), head.n_units)
        logits = influence.decomposed_logits(features[layer], head.full_weight().cpu(), head.bias.cpu(), mask)
    return influence.accuracy(logits, subset["labels"]), float(nn.functional.cross_entropy(logits, subset["labels"]))


def finetune(model: nn.Module, sets: torch.Tensor, train: dict, test: dict, *, epochs: int, batch_size: int, lr: float,
             seed: int, device: torch.device, precision: str, eval_batch_size: int, input_spec: dict | None = None,
             layer: str = "avgpool") -> tuple[nn.Module, list[dict]]:
    """Decompose a copy of `model` by the class sets and train it end to end with Adam.

    train, test: prepared subsets ({"images": uint8 N x C x S x S, "labels"}). The batches come
    in an order drawn by a generator seeded with `seed`. Returns (network, history): history[0]
    is before training ({"epoch": 0, "test_accuracy", "test_loss", "full_accuracy": the model's
    own final layer through the same path}), then one entry per epoch with the mean training
    loss. A non-finite loss stops with a PipelineError.
    """
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise PipelineError(f"params.yaml: 'finetune': epochs {epochs} (0 or more), batch_size {batch_size} "
                            f"(1 or more) and lr {lr} (above 0) are out of range")
    network = decompose(model, sets).to(device)
    evaluation = {"batch_size": eval_batch_size, "device": device, "precision": precision,
                  "input_spec": input_spec, "layer": layer}
    full_features, _ = pooled_features(model, test["images"], [layer], eval_batch_size, device, precision,
                                       input_spec, "full test", key="finetune.layer")
    n_classes, n_units = model.fc.weight.shape
    full_logits = influence.decomposed_logits(full_features[layer], model.fc.weight.detach().cpu(),
                                              model.fc.bias.detach().cpu(),
                                              torch.ones(n_classes, n_units, dtype=torch.bool))
    accuracy, loss = evaluate_decomposed(network, test, **evaluation)
    history = [{"epoch": 0, "test_accuracy": accuracy, "test_loss": loss,
                "full_accuracy": influence.accuracy(full_logits, test["labels"])}]
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    images, labels = train["images"], train["labels"]
    n_batches = (len(labels) + batch_size - 1) // batch_size
    # one intra-op thread while training: oneDNN's multithreaded reductions in the convolutions'
    # backward pass (the maps the small-map products of netunits.accel leave to it) can sum in
    # another order from run to run, and a rerun must write the same bits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history += _epochs(network, optimizer, shuffle, images, labels, test, evaluation, epochs=epochs,
                           batch_size=batch_size, n_batches=n_batches, lr=lr, device=device, precision=precision,
                           input_spec=input_spec)
    finally:
        torch.set_num_threads(threads)
    network.eval()
    return network, history


def _epochs(network, optimizer, shuffle, images, labels, test, evaluation, *, epochs, batch_size, n_batches, lr,
            device, precision, input_spec) -> list[dict]:
    history = []
    for epoch in range(1, epochs + 1):
        network.train()
        order = torch.randperm(len(labels), generator=shuffle)
        loss_sum = 0.0
        for step in progress(range(n_batches), f"fine-tuning epoch {epoch}/{epochs}"):
            batch = order[step * batch_size:(step + 1) * batch_size]
            with autocast(device, precision):
                logits = network(images_to_input(images[batch], device, channels_last=True, spec=input_spec))
            batch_loss = nn.functional.cross_entropy(logits.float(), labels[batch].to(device))
            if not torch.isfinite(batch_loss):
                raise PipelineError(f"finetune: the loss became {batch_loss.item()} at epoch {epoch}, batch "
                                    f"{step + 1}; lower 'finetune.lr' (now {lr})")
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            loss_sum += batch_loss.item() * len(batch)
        accuracy, loss = evaluate_decomposed(network, test, **evaluation)
        history.append({"epoch": epoch, "test_accuracy": accuracy, "test_loss": loss,
                        "train_loss": loss_sum / len(labels)})
    return history
