"""ROF at layers with spatial maps (netunits/layer_rof.py): for each layer of layer_rof.layers,
its channels ranked by L1 norm on each subset, the top K kept (the others' maps set to zero)
and the rest of the network run; accuracy and loss curves on a grid of K refined around the
turning points, the turning points, and the four roles per channel, defined as rof_sweep
defines them for the pooled units (netunits/methods/rof.py: U0 the first n0 channels of a
subset's order, roles from U0 of the training and the test subset, rof.turning_point choosing
exact or tolerance turning points with rof.acc_tolerance and rof.loss_tolerance).

Each subset is the prepared one, or with layer_rof.images a seeded random sample of it (every K
costs a forward pass of the rest of the network over the images). The grid is 0, k_step,
2 k_step, ... and every channel; layer_rof.refine adds every K between
a turning point found on the grid and its grid neighbours, until no turning point moves. The
turning points are then those of the full curve unless a better point lies more than one grid
step from every point the grid found best; k_step 1 evaluates every K (full curves).

From a notebook: `run_layer_rof(LayerRofInputs(model, checkpoint, {"train": t, "test": s}),
LayerRofParams(...), RofParams(...), Runtime(device, "bf16"))`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from netunits.data.prepared import load_prepared
from netunits.errors import PipelineError
from netunits.files import write_csv, write_json
from netunits.layer_rof import channel_order, grid, grid_turning_points, layer_maps, refine, retrieval_at_layer
from netunits.methods.rof import (
    CATEGORIES,
    DEFINITIONS,
    METRIC_NAMES,
    SUBSETS,
    categorize,
    category_counts,
    highly_active,
    is_degenerate,
)
from netunits.models.registry import load_checkpoint
from netunits.params import LayerRofParams, RofParams
from netunits.runtime import Runtime

KEY = "layer_rof.layers"


@dataclass
class LayerRofInputs:
    model: torch.nn.Module             # on the cpu, eval mode
    checkpoint: dict
    subsets: dict[str, dict]           # "train", "test" -> prepared subsets


@dataclass
class LayerRofResult:
    curves: dict[str, list[dict]]      # per layer: one row per subset and evaluated K
    roles: dict[str, list[dict]]       # per layer: one row per channel
    metrics: dict
    seconds: dict[str, float] = field(default_factory=dict)   # wall time per layer (printed, not written)

    def summary(self) -> str:
        lines = []
        # the turning points the roles come from (rof.turning_point), named as such
        tol = "_tol" if self.metrics["turning_point"] == "tolerance" else ""
        for layer, m in self.metrics["layers"].items():
            points = ", ".join(f"{s} n0_acc {m[s]['n0_acc' + tol]} / n0_loss {m[s]['n0_loss' + tol]}" for s in SUBSETS)
            roles = ", ".join(f"{c} {m['roles']['acc'][c]}" for c in CATEGORIES)
            lines.append(f"{layer}: {m['n_channels']} channels, {m['train']['evaluated']} + {m['test']['evaluated']} "
                         f"K evaluated (train + test), {self.seconds.get(layer, 0):.0f} s; {points} "
                         f"({self.metrics['turning_point']}); roles by accuracy: {roles}")
        return "\n".join(lines)


def sample(subset: dict, size: int | str, seed: int) -> dict:
    """The subset, or a seeded random `size` of it in the file's order."""
    if size == "all" or size >= len(subset["labels"]):
        return subset
    picked = torch.randperm(len(subset["labels"]), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return {**subset, "images": subset["images"][picked], "labels": subset["labels"][picked]}


def load_layer_rof_inputs(paths: dict[str, Path]) -> LayerRofInputs:
    model, checkpoint = load_checkpoint(paths["model"])
    subsets = {split: load_prepared(paths[f"{split}_set"]) for split in SUBSETS}
    for split, subset in subsets.items():
        if subset["image_size"] != checkpoint["image_size"]:
            raise PipelineError(f"{paths[f'{split}_set']}: images are {subset['image_size']} px but {paths['model']} "
                                f"was trained on {checkpoint['image_size']} px; rerun `dvc repro`")
    return LayerRofInputs(model, checkpoint, subsets)


def check_layers(model: torch.nn.Module, images: torch.Tensor, config: LayerRofParams, runtime: Runtime,
                 spec: dict, source: str) -> dict[str, int]:
    """Every listed layer's channel count, from one image: a layer the model lacks, one without
    spatial maps, one the rest of the network cannot be run from, or a grid step that leaves no
    point between none and every channel stops here, before minutes of work."""
    channels = {}
    for layer in config.layers:
        maps, logits = layer_maps(model, images[:1], layer, 1, runtime.device, runtime.precision, spec, KEY)
        n = maps.shape[1]
        if config.k_step >= n:
            raise PipelineError(f"{source}: 'layer_rof.k_step' is {config.k_step}; it must be from 1 to {n - 1} "
                                f"({layer} has {n} channels)")
        channels[layer] = n
    return channels


def subset_curve(model, layer, maps, labels, logits, config, rof, runtime):
    """{K: (accuracy, loss)} on the grid, refined; and the channel order."""
    order = channel_order(maps)
    n = maps.shape[1]
    kwargs = dict(batch_size=config.batch_size, device=runtime.device, precision=runtime.precision, key=KEY)
    results = retrieval_at_layer(model, layer, maps, labels, order, grid(n, config.k_step),
                                 reference_logits=logits, **kwargs)
    on_grid = set(results)
    results = refine(results, model, layer, maps, labels, order, acc_tolerance=rof.acc_tolerance,
                     loss_tolerance=rof.loss_tolerance, **kwargs)
    return results, on_grid, order


def run_layer_rof(inputs: LayerRofInputs, config: LayerRofParams, rof: RofParams, runtime: Runtime,
                  source: str = "params.yaml") -> LayerRofResult:
    model, spec = inputs.model, inputs.checkpoint["input"]
    model.to(runtime.device, memory_format=torch.channels_last)
    channels = check_layers(model, inputs.subsets["test"]["images"], config, runtime, spec, source)
    chosen = rof.turning_point
    curves, roles, seconds = {}, {}, {}
    subsets = {s: sample(inputs.subsets[s], config.images, config.seed) for s in SUBSETS}
    metrics = {"turning_point": chosen, "k_step": config.k_step,
               "images": {s: len(subsets[s]["labels"]) for s in SUBSETS}, "layers": {}}
    for layer, n in channels.items():
        start = time.perf_counter()
        results, on_grid, orders, l1 = {}, {}, {}, {}
        for subset in SUBSETS:
            data = subsets[subset]
            maps, logits = layer_maps(model, data["images"], layer, config.batch_size, runtime.device,
                                      runtime.precision, spec, KEY)
            results[subset], on_grid[subset], orders[subset] = subset_curve(model, layer, maps, data["labels"], logits,
                                                                            config, rof, runtime)
            l1[subset] = maps.to(torch.float64).abs().sum(dim=(0, 2, 3))
            del maps
        points = {s: grid_turning_points(results[s], rof.acc_tolerance, rof.loss_tolerance) for s in SUBSETS}
        categories = {(d, m): categorize(*(highly_active(orders[s], points[s][d][m]) for s in SUBSETS))
                      for d in DEFINITIONS for m in METRIC_NAMES}
        rank = {}
        for s in SUBSETS:
            rank[s] = torch.empty_like(orders[s])
            rank[s][orders[s]] = torch.arange(n)
        roles[layer] = [{"unit": u, "l1_train": float(l1["train"][u]), "l1_test": float(l1["test"][u]),
                         "rank_train": int(rank["train"][u]) + 1, "rank_test": int(rank["test"][u]) + 1,
                         "category_acc": categories[(chosen, "acc")][u],
                         "category_loss": categories[(chosen, "loss")][u]} for u in range(n)]
        curves[layer] = [{"subset": s, "n_units": k, "accuracy": acc, "loss": loss, "on_grid": int(k in on_grid[s])}
                         for s in SUBSETS for k, (acc, loss) in results[s].items()]
        metrics["layers"][layer] = {
            "n_channels": n,
            **{s: {"n0_acc": points[s]["exact"]["acc"], "n0_loss": points[s]["exact"]["loss"],
                   "n0_acc_tol": points[s]["tolerance"]["acc"], "n0_loss_tol": points[s]["tolerance"]["loss"],
                   "full_accuracy": results[s][n][0], "none_accuracy": results[s][0][0],
                   "max_accuracy": max(acc for acc, _ in results[s].values()),
                   "evaluated": len(results[s]), "on_grid": len(on_grid[s])} for s in SUBSETS},
            "roles": {m: category_counts(categories[(chosen, m)]) for m in METRIC_NAMES},
            "degenerate": {m: any(is_degenerate(points[s][chosen][m], n) for s in SUBSETS) for m in METRIC_NAMES}}
        seconds[layer] = time.perf_counter() - start
    return LayerRofResult(curves, roles, metrics, seconds)


def write_layer_rof(result: LayerRofResult, paths: dict[str, Path]) -> None:
    folder = paths["layer_rof_dir"]
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.csv"):       # a layer no longer listed leaves no table behind
        if stale.name.split("_")[0] not in result.curves:
            stale.unlink()
    for layer in result.curves:
        write_csv(result.curves[layer], folder / f"{layer}_curves.csv")
        write_csv(result.roles[layer], folder / f"{layer}_roles.csv")
    write_json(result.metrics, paths["layer_rof_metrics"])
