"""ROF at a layer with spatial maps (a ResNet stage or block, not the pooled layer): rank the
layer's channels by their L1 norm on a subset, keep the top K (the other channels' maps set to
zero) and run the rest of the network; accuracy and mean cross-entropy for every K of a grid.

The layer's output is computed once per subset; for each K only the rest of the network runs
on the masked maps. "The rest" is the model's top-level children after the layer (after a block
`layerN.i`: the later blocks of layerN, then the later children), with a flatten before the
final Linear: how the ResNets here run their forward. With every channel kept, tail_logits
checks that against the model's own logits, bit for bit, and refuses any other model with a
one-line error.

ROF of the pooled layer itself is netunits/methods/rof.py's (every K at once on the cached
pooled features); this module is for the layers before it, where each K needs a forward pass.
"""
from __future__ import annotations

import torch
from torch import nn

from netunits.activations import get_layer, iterate_activations
from netunits.errors import PipelineError
from netunits.methods.rof import rank_units, turning_points
from netunits.runtime import autocast, progress


def tail_modules(model: nn.Module, layer: str, key: str = "rof.layers") -> list[nn.Module]:
    """The modules that run after `layer` (a top-level child or a block `child.i` of one)."""
    get_layer(model, layer, key)
    children = dict(model.named_children())
    names = list(children)
    parts = layer.split(".")
    if len(parts) == 1 and layer in children:
        return [children[n] for n in names[names.index(layer) + 1:]]
    if len(parts) == 2 and isinstance(children.get(parts[0]), nn.Sequential):
        blocks = dict(children[parts[0]].named_children())
        order = list(blocks)
        if parts[1] in blocks:
            return [blocks[n] for n in order[order.index(parts[1]) + 1:]] + \
                [children[n] for n in names[names.index(parts[0]) + 1:]]
    raise PipelineError(f"params.yaml: '{key}' has {layer!r}; ROF at a layer takes a top-level layer or one block "
                        f"of it ({', '.join(n for n in names if isinstance(children[n], nn.Sequential))} or "
                        f"e.g. {names[-3]}.0)")


def run_tail(modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for module in modules:
        if isinstance(module, nn.Linear) and x.dim() > 2:
            x = x.flatten(1)
        x = module(x)
    return x


def layer_maps(model: nn.Module, images_u8: torch.Tensor, layer: str, batch_size: int, device: torch.device,
               precision: str, input_spec: dict | None = None,
               key: str = "rof.layers") -> tuple[torch.Tensor, torch.Tensor]:
    """(the layer's output maps N x C x H x W on the cpu, as the forward produced them, and the
    model's logits fp32 N x classes)."""
    maps, logits = [], []
    for _, outputs, batch_logits in iterate_activations(model, images_u8, [layer], batch_size, device, precision,
                                                        input_spec, f"{layer} maps", key):
        if outputs[layer].dim() != 4 or outputs[layer].shape[2] * outputs[layer].shape[3] == 1:
            raise PipelineError(f"params.yaml: '{key}' has {layer!r}, whose output {tuple(outputs[layer].shape)} has "
                                f"no spatial maps; ROF of the pooled layer is the rof_sweep stage's")
        maps.append(outputs[layer])
        logits.append(batch_logits)
    return torch.cat(maps), torch.cat(logits)


def channel_order(maps: torch.Tensor) -> torch.Tensor:
    """Channels by descending L1 norm over samples and positions (float64), ties to the lower index."""
    return rank_units(maps.to(torch.float64).abs().sum(dim=(0, 2, 3)), descending=True)


@torch.no_grad()
def tail_logits(model: nn.Module, layer: str, maps: torch.Tensor, keep: torch.Tensor, batch_size: int,
                device: torch.device, precision: str, reference_logits: torch.Tensor | None = None,
                key: str = "rof.layers") -> torch.Tensor:
    """Logits (fp32, cpu) of the rest of the network on the maps with only the channels in `keep`
    (bool C) left, the others set to exactly zero. With reference_logits (the model's own; keep
    then holds every channel), the result must reproduce them bit for bit.

    The maps keep the memory layout the forward gave them (channels last): the same convolution
    kernels then run on the same batches as in the whole forward, so the bits agree."""
    modules = tail_modules(model, layer, key)
    model.eval()
    drop = ~keep.to(torch.bool).view(1, -1, 1, 1).to(device)
    logits = []
    for start in range(0, len(maps), batch_size):
        x = maps[start:start + batch_size].to(device).clone(memory_format=torch.preserve_format)
        x.masked_fill_(drop, 0)
        with autocast(device, precision):
            logits.append(run_tail(modules, x).float().cpu())
    logits = torch.cat(logits)
    if reference_logits is not None and not torch.equal(logits, reference_logits):
        raise PipelineError(f"params.yaml: '{key}' has {layer!r}, but running the model's layers after it does not "
                            f"reproduce its output; ROF at a layer needs a model whose forward runs its layers "
                            f"in order (the ResNets here)")
    return logits


def check_grid(ks, n_channels: int, key: str = "rof.k_grid") -> list[int]:
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 0 or ks[-1] > n_channels:
        raise PipelineError(f"params.yaml: '{key}' must be channel counts from 0 to {n_channels}; got "
                            f"{ks[:3] + ['...'] + ks[-1:] if len(ks) > 4 else ks}")
    return ks


def grid(n_channels: int, step: int) -> list[int]:
    """0, step, 2 step, ... and n_channels (every K when step is 1)."""
    return sorted(set(range(0, n_channels + 1, max(1, step))) | {n_channels})


def retrieval_at_layer(model: nn.Module, layer: str, maps: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
                       ks, batch_size: int, device: torch.device, precision: str,
                       reference_logits: torch.Tensor | None = None,
                       key: str = "rof.layers") -> dict[int, tuple[float, float]]:
    """{K: (accuracy, mean cross-entropy in float64)} for every K of ks: the top K channels of
    `order` kept, the rest of the network run on the masked maps."""
    n_channels = maps.shape[1]
    ks = check_grid(ks, n_channels)
    results = {}
    # all channels first: its check against the model's own logits refuses an unsuitable model
    # before the other points are spent
    for k in progress(sorted(ks, key=lambda k: k != n_channels), f"ROF at {layer}"):
        keep = torch.zeros(n_channels, dtype=torch.bool)
        keep[order[:k]] = True
        logits = tail_logits(model, layer, maps, keep, batch_size, device, precision,
                             reference_logits if k == n_channels else None, key)
        results[k] = (float((logits.argmax(dim=1) == labels).double().mean()),
                      float(nn.functional.cross_entropy(logits.double(), labels)))
    return dict(sorted(results.items()))


def grid_turning_points(results: dict, acc_tolerance: float = 0.0, loss_tolerance: float = 0.0) -> dict:
    """rof.turning_points on the evaluated K only: {definition: {metric: K}}."""
    ks = sorted(results)
    points = turning_points(torch.tensor([results[k][0] for k in ks], dtype=torch.float64),
                            torch.tensor([results[k][1] for k in ks], dtype=torch.float64),
                            acc_tolerance, loss_tolerance)
    return {definition: {metric: ks[i] for metric, i in by_metric.items()} for definition, by_metric in points.items()}


def refine(results: dict, model: nn.Module, layer: str, maps: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
           batch_size: int, device: torch.device, precision: str, acc_tolerance: float = 0.0,
           loss_tolerance: float = 0.0, key: str = "rof.layers") -> dict[int, tuple[float, float]]:
    """Evaluate every K between a turning point found on the grid and its grid neighbours (both
    definitions, both metrics, as rof.turning_points), again until no turning point moves to a
    new gap. The turning points are then those of the full curve unless a better point lies
    more than one grid step away from every point the grid found best. Returns the merged
    {K: (accuracy, loss)}."""
    results = dict(results)
    while True:
        ks = sorted(results)
        extra = set()
        for by_metric in grid_turning_points(results, acc_tolerance, loss_tolerance).values():
            for k in by_metric.values():
                i = ks.index(k)
                extra |= set(range(ks[max(0, i - 1)], ks[min(len(ks) - 1, i + 1)] + 1)) - set(ks)
        if not extra:
            return dict(sorted(results.items()))
        results.update(retrieval_at_layer(model, layer, maps, labels, order, sorted(extra), batch_size, device,
                                          precision, key=key))
