"""The compose stage as one library call: for every unit of the configured layers, the logical
formula over the probe set's concepts whose mask best matches the unit's, by beam search
(netunits.methods.compose_search), with its score, length and the best single concept beside it.

A unit's mask is network dissection's: its activation map above the threshold dissect found.

From a notebook, with no files:
    result = run_compose(ComposeInputs(model, checkpoint["input"], probe, tallies), params.compose, runtime)
    result.layers["layer4"].formulas[7]        # unit 7's formula, a tree (netunits.methods.formula)
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from netunits.activations import iterate_activations
from netunits.data.probe import load_probe, pack_masks
from netunits.errors import PipelineError
from netunits.files import file_sha256, load_checked, remove_stale_temps, save_torch, write_csv, write_json
from netunits.methods.compose_search import Primitives, search_units
from netunits.methods.compose_sparse import sparse_primitives, sparse_search_applies
from netunits.methods.dissection import may_fire
from netunits.methods.formula import Formula, canonical, to_string
from netunits.methods.formula_masks import concept_masks, formula_mask_on, unit_mask_positions
from netunits.models.registry import load_checkpoint
from netunits.params import PARAMS_FILE, ComposeParams
from netunits.plots import close, formula_length_figure, save_figure
from netunits.runtime import Runtime, progress

FIGURE_DPI = 110
# units searched together: their masks are built from the fired maps for one chunk at a time, so the
# memory holds a chunk's masks, not the layer's (2,048 units x 4 M positions on Broden)
UNIT_CHUNK = 128


@dataclass
class ComposeInputs:
    """model: a trained network (eval mode, on any device); input_spec: its checkpoint's "input"
    (how uint8 images become its input); probe: a probe set (netunits.data.probe); tallies:
    dissect's tallies ("per_layer": thresholds, top_maps, top_images per layer)."""
    model: torch.nn.Module
    input_spec: Mapping | None
    probe: Mapping
    tallies: Mapping


@dataclass
class LayerFormulas:
    """One layer's search: per unit (index = unit) the search's result dict (formula, score, iou,
    length, single, single_score, single_iou, best_by_length, evaluated), and the formula's mask
    on the unit's top images (dissect's), packed as the probe packs masks."""
    units: list[dict]
    top_images: torch.Tensor
    size: int
    top_masks: np.ndarray

    @property
    def formulas(self) -> list[Formula | None]:
        return [unit["formula"] for unit in self.units]

    def explained(self) -> list[dict]:
        """The units that fire somewhere on the probe set (the others have no formula)."""
        return [unit for unit in self.units if unit["formula"] is not None]

    def scores_by_length(self, max_length: int) -> dict[int, list[float]]:
        """{length: each unit's best score at that length}, lengths some unit reached."""
        by_length = {n: [u["best_by_length"][n] for u in self.explained() if n in u["best_by_length"]]
                     for n in range(1, max_length + 1)}
        return {n: v for n, v in by_length.items() if v}

    def gains(self) -> list[float]:
        """Each explained unit's formula IoU minus its best single concept's."""
        return [u["iou"] - u["single_iou"] for u in self.explained()]


@dataclass
class ComposeResult:
    config: ComposeParams                          # the compose params the search ran with
    layers: dict[str, LayerFormulas] = field(default_factory=dict)
    checkpoint_sha256: str | None = None           # the checkpoint's, as dissect's tallies name it

    def rows(self) -> list[dict]:
        """formulas.csv: one row per unit of every layer."""
        rows = []
        for layer, found in self.layers.items():
            for unit, result in enumerate(found.units):
                rows.append({"layer": layer, "unit": unit,
                             "formula": "" if result["formula"] is None else to_string(result["formula"]),
                             "length": result["length"], "score": result["score"], "iou": result["iou"],
                             "single": result["single"] or "", "single_score": result["single_score"],
                             "single_iou": result["single_iou"], "iou_gain": result["iou"] - result["single_iou"]})
        return rows

    def metrics(self) -> dict:
        config, max_length = self.config, self.config.max_length
        metrics = {"resolution": config.resolution, "score": config.score, "connectors": list(config.connectors),
                   "expand": config.expand, "layers": {}}
        for layer, found in self.layers.items():
            explained, gains = found.explained(), found.gains()
            lengths = [u["length"] for u in explained]

            def mean(key, explained=explained):
                return float(np.mean([u[key] for u in explained])) if explained else None
            metrics["layers"][layer] = {
                "units": len(found.units), "units_with_mask": len(explained),
                "mean_score_by_length": {str(n): float(np.mean(v))
                                         for n, v in found.scores_by_length(max_length).items()},
                "mean_score": mean("score"), "mean_iou": mean("iou"), "mean_single_iou": mean("single_iou"),
                "share_gain_at_least_min_gain": (float(np.mean([g >= config.min_gain - 1e-12 for g in gains]))
                                                 if explained else None),
                "formulas_by_length": {str(n): lengths.count(n) for n in range(1, max_length + 1)},
                # the same formula up to the order of commutative operands counts once
                "unique_formulas": len({canonical(u["formula"]) for u in explained})}
        return metrics

    def top_masks(self) -> dict:
        """top_masks.pt: each formula's mask on its unit's top images, for the report."""
        return {"checkpoint_sha256": self.checkpoint_sha256,
                "per_layer": {layer: {"top_images": found.top_images, "size": found.size, "masks": found.top_masks}
                              for layer, found in self.layers.items()}}

    def figure(self):
        """Score against formula length, and the IoU gains over the best single concept."""
        return formula_length_figure({layer: found.scores_by_length(self.config.max_length)
                                      for layer, found in self.layers.items()},
                                     {layer: found.gains() for layer, found in self.layers.items()},
                                     self.config.min_gain)

    def summary(self) -> str:
        """One line per layer: the mean best score by formula length and the share of units the
        formula helps."""
        lines = []
        for layer, m in self.metrics()["layers"].items():
            by_length = ", ".join(f"{n}: {v:.4f}" for n, v in m["mean_score_by_length"].items())
            share = m["share_gain_at_least_min_gain"]
            lines.append(f"{layer}: {m['units_with_mask']} of {m['units']} units explained; "
                         f"mean {self.config.score} by "
                         f"formula length {by_length or 'none'}; "
                         + (f"{share:.1%} of units gain at least {self.config.min_gain} IoU over their best concept; "
                            if share is not None else "")
                         + f"{m['unique_formulas']} distinct formulas")
        return "\n".join(lines)


@dataclass
class FiredMaps:
    """One layer's activation maps that may fire (netunits.methods.dissection.may_fire) on probe
    images start..stop - 1 of n_images: image (probe index), unit, and the maps (float32 K x h x
    w, in memory or a memory-mapped spill file), in image order. The others have empty masks."""
    start: int
    stop: int
    n_images: int
    image: np.ndarray
    unit: np.ndarray
    maps: np.ndarray


def fired_maps_shard(model: torch.nn.Module, probe: Mapping, layer: str, thresholds: torch.Tensor, run: dict,
                     shard: tuple[int, int], spill=None) -> FiredMaps:
    """The maps that may fire on the probe images shard = (start, stop), an independent task.
    spill: a binary file the maps are written to as they come (then memory-mapped), so that a
    Broden-sized probe's (gigabytes) never sits in memory; None keeps them in memory."""
    start, stop = shard
    images, units, kept, shape = [], [], [], None
    for first, outputs, _ in iterate_activations(model, probe["images"][start:stop], [layer], desc=f"{layer} masks",
                                                 **run):
        maps = outputs[layer].float()
        shape = maps.shape[2:]
        image, unit = may_fire(maps, thresholds.float())
        images.append(image.numpy() + start + first)
        units.append(unit.numpy())
        chosen = maps[image, unit].contiguous().numpy()
        if spill is None:
            kept.append(chosen)
        else:
            spill.write(chosen.tobytes())
    image = np.concatenate(images) if images else np.zeros(0, np.int64)
    unit = np.concatenate(units) if units else np.zeros(0, np.int64)
    shape = tuple(shape) if shape is not None else (1, 1)
    if spill is None:
        maps = np.concatenate(kept) if kept else np.zeros((0, *shape), np.float32)
    else:
        spill.flush()
        maps = (np.memmap(spill, dtype=np.float32, mode="r", shape=(len(image), *shape)) if len(image)
                else np.zeros((0, *shape), np.float32))
    return FiredMaps(start, stop, len(probe["images"]), image, unit, maps)


def merge_fired_maps(parts: list[FiredMaps]) -> FiredMaps:
    """The shards' fired maps as one run over the whole probe set, in image order."""
    parts = sorted(parts, key=lambda part: part.start)
    bounds = [(part.start, part.stop) for part in parts]
    if not parts or bounds[0][0] != 0 or bounds[-1][1] != parts[0].n_images or \
            any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
        raise PipelineError(f"compose's unit masks: the shards cover probe images {bounds}; they must cover 0 to "
                            f"{parts[0].n_images if parts else '?'} once, each shard starting where one ends")
    if len(parts) == 1:
        return parts[0]
    return FiredMaps(0, parts[-1].stop, parts[0].n_images, *(np.concatenate([getattr(part, key) for part in parts])
                                                             for key in ("image", "unit", "maps")))


def positions_of_units(fired: FiredMaps, thresholds: torch.Tensor, size: int, words: int,
                       units: range) -> list[np.ndarray]:
    """Each of `units`' mask as sorted flat positions (image * words * 64 + position): its fired
    maps upsampled to size x size (or at the layer's grid) above its threshold."""
    order = np.argsort(fired.unit, kind="stable")                  # each unit's maps in image order
    bounds = np.searchsorted(fired.unit[order], np.arange(len(thresholds) + 1))
    found = []
    for unit in units:
        rows = np.sort(order[bounds[unit]:bounds[unit + 1]])
        maps = torch.from_numpy(np.ascontiguousarray(fired.maps[rows]))
        pair, position = unit_mask_positions(maps[:, None], thresholds[unit:unit + 1], size)[::2]
        found.append(fired.image[rows][pair.numpy()] * words * 64 + position.numpy())
    return found


def unit_positions(model: torch.nn.Module, probe: Mapping, layer: str, thresholds: torch.Tensor, size: int,
                   words: int, run: dict) -> list[np.ndarray]:
    """Each unit's mask as flat positions (image * words * 64 + position), from batches of
    activations: upsampled to size x size (resolution mask) or at the layer's own grid.
    run: iterate_activations' batch_size, device, precision, input_spec and key. One shard over
    the whole probe set (netunits.shards runs several)."""
    fired = fired_maps_shard(model, probe, layer, thresholds, run, (0, len(probe["images"])))
    return positions_of_units(fired, thresholds, size, words, range(len(thresholds)))


def positions_by_unit(units: list[np.ndarray], positions: list[np.ndarray], n_units: int) -> list[np.ndarray]:
    """Batches of (unit, flat position) pairs regrouped as one sorted array of positions per unit."""
    units = np.concatenate(units) if units else np.zeros(0, dtype=np.int64)
    positions = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
    order = np.argsort(units, kind="stable")
    bounds = np.searchsorted(units[order], np.arange(n_units + 1))
    grouped = positions[order]
    return [np.sort(grouped[bounds[u]:bounds[u + 1]]) for u in range(n_units)]


def check_layers(config: ComposeParams, tallies: Mapping, source: str = PARAMS_FILE) -> None:
    """Every layer of compose.layers must have been dissected (its thresholds come from there)."""
    for layer in config.layers:
        if layer not in tallies["per_layer"]:
            raise PipelineError(f"{source}: 'compose.layers' has {layer!r}, which was not dissected; dissected "
                                f"layers (dissect.layers): {', '.join(tallies['per_layer'])}")


def search_primitives(probe: Mapping, config: ComposeParams, size: int, grid: int):
    """The concept masks the search combines: kept only where present (compose_sparse) for the
    connectors OR, AND, AND NOT and WITH without expansion; dense otherwise (the spatial
    connectors and expanded primitives). Both give the same counts, so the same formulas."""
    if sparse_search_applies(config.connectors, config.expand):
        return sparse_primitives(probe, config.resolution, size, config.downsample_min)
    return Primitives(concept_masks(probe, config.resolution, size, config.downsample_min), grid,
                      config.connectors, config.expand)


def layer_setup(inputs: ComposeInputs, layer: str, config: ComposeParams, runtime: Runtime) -> dict:
    """What one layer's passes read: its thresholds (dissect's), the masks' side (size), the
    layer's own grid and the forward pass's settings (run: iterate_activations' arguments)."""
    per_layer = inputs.tallies["per_layer"][layer]
    grid = per_layer["top_maps"].shape[-1]                       # the layer's own cells per side
    return {"thresholds": per_layer["thresholds"], "grid": grid,
            "size": inputs.probe["mask_size"] if config.resolution == "mask" else grid,
            "run": dict(batch_size=config.batch_size, device=runtime.device, precision=runtime.precision,
                        input_spec=inputs.input_spec, key="compose.layers")}


def unit_chunks(n_units: int) -> list[range]:
    """The units searched together (UNIT_CHUNK at a time)."""
    return [range(a, min(a + UNIT_CHUNK, n_units)) for a in range(0, n_units, UNIT_CHUNK)]


def search_chunk(primitives, fired: FiredMaps, thresholds: torch.Tensor, size: int, units: range,
                 config: ComposeParams) -> list[dict]:
    """The beam search of `units`, their masks built from the fired maps."""
    return search_units(primitives, positions_of_units(fired, thresholds, size, primitives.words, units),
                        connectors=config.connectors, beam=config.beam, max_length=config.max_length,
                        candidates=config.candidates, score=config.score, r=config.imrou_r,
                        penalty=config.length_penalty)


def layer_formulas(probe: Mapping, per_layer: Mapping, found: list[dict], config: ComposeParams, size: int,
                   grid: int) -> LayerFormulas:
    """One layer's search results with each formula's mask on its unit's top images (dissect's)."""
    top_images = per_layer["top_images"]
    masks = torch.zeros(len(found), top_images.shape[1], size, size, dtype=torch.bool)
    for unit, result in enumerate(found):
        if result["formula"] is not None:
            masks[unit] = formula_mask_on(probe, top_images[unit], result["formula"], config.resolution, size,
                                          config.downsample_min, grid)
    return LayerFormulas(found, top_images, size, pack_masks(masks.numpy()))


def compose_layer(inputs: ComposeInputs, layer: str, config: ComposeParams, runtime: Runtime) -> LayerFormulas:
    """One layer's formulas: the units' masks from a model pass, the concept masks bit-packed,
    the beam search, and each formula's mask on its unit's top images."""
    setup, probe = layer_setup(inputs, layer, config, runtime), inputs.probe
    thresholds, size = setup["thresholds"], setup["size"]
    primitives = search_primitives(probe, config, size, setup["grid"])
    found = []
    with tempfile.TemporaryFile() as spill:
        fired = fired_maps_shard(inputs.model, probe, layer, thresholds, setup["run"], (0, len(probe["images"])),
                                 spill)
        for units in progress(unit_chunks(len(thresholds)), f"{layer} search, {UNIT_CHUNK} units at a time"):
            found += search_chunk(primitives, fired, thresholds, size, units, config)
        del fired
    return layer_formulas(probe, inputs.tallies["per_layer"][layer], found, config, size, setup["grid"])


def run_compose(inputs: ComposeInputs, config: ComposeParams, runtime: Runtime,
                source: str = PARAMS_FILE) -> ComposeResult:
    """Compositional explanations of every unit of config.layers (compose params: layers,
    resolution, downsample_min, connectors, expand, score, imrou_r, length_penalty, beam,
    max_length, candidates, min_gain, batch_size); runtime: the device and precision of the
    model pass (netunits.runtime.resolve_compute). source names the params in errors."""
    check_layers(config, inputs.tallies, source)
    inputs.model.to(runtime.device, memory_format=torch.channels_last)
    return ComposeResult(config, {layer: compose_layer(inputs, layer, config, runtime) for layer in config.layers},
                         inputs.tallies.get("checkpoint_sha256"))


def load_compose_inputs(paths: Mapping[str, Path]) -> ComposeInputs:
    """The checkpoint (paths["model"]), probe set (paths["probe"]) and dissect's tallies
    (paths["tallies"]), checked to belong together (paths: netunits.stage_table.stage_paths)."""
    tallies = load_checked(paths["tallies"], {"per_layer": lambda v: isinstance(v, dict)}, "dissection tallies")
    if tallies.get("checkpoint_sha256") != file_sha256(paths["model"]):
        raise PipelineError(f"{paths['tallies']}: made from another checkpoint than {paths['model']}; "
                            "rerun `dvc repro dissect`")
    model, checkpoint = load_checkpoint(paths["model"])
    return ComposeInputs(model, checkpoint["input"], load_probe(paths["probe"]), tallies)


def write_compose(result: ComposeResult, paths: Mapping[str, Path]) -> None:
    """The formulas table (paths["formulas"]), their masks on the units' top images
    (paths["formula_masks"]), the metrics (paths["compose_metrics"]) and the figure
    (paths["compose_figure"]); every file complete or not there (netunits.files)."""
    remove_stale_temps(*(paths[k] for k in ("formulas", "formula_masks", "compose_metrics", "compose_figure")))
    write_csv(result.rows(), paths["formulas"])
    save_torch(result.top_masks(), paths["formula_masks"])
    write_json(result.metrics(), paths["compose_metrics"])
    figure = result.figure()
    save_figure(figure, paths["compose_figure"], FIGURE_DPI)
    close(figure)
