"""Network dissection's answers from the tallies (stage dissect_report) as one call: per unit its
best concepts and IoU, the detectors (best IoU at or above the config's iou_threshold), unique
concepts per layer, the units of the block ROF's units pool joined with ROF's roles, each layer's
channels joined with their own ROF roles where layer_rof computed that layer ("not computed"
otherwise), and the figures (detectors per concept, and the image strips of the strongest units)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from netunits.api.dissect import DissectResult, LayerTallies
from netunits.data.probe import load_probe
from netunits.errors import PipelineError
from netunits.files import load_checked, read_csv, remove_stale_temps, write_csv, write_json
from netunits.layer_roles import read_layer_roles, roles_or_not_computed
from netunits.methods.dissection import detector_summary, detectors_per_concept, role_summary, unit_masks, unit_rows
from netunits.methods.rof import CATEGORIES
from netunits.models.checkpoint import load_checkpoint_file
from netunits.models.registry import get_architecture
from netunits.plots import close, concepts_per_layer_figure, save_figure, strip_label, strips_figure

STRIP_UNITS = 8        # units in the image strips: the ROF block's best by IoU
FIGURE_DPI = 110


@dataclass
class DissectReportInputs:
    tallies: DissectResult
    roles: dict[str, list[str]]        # ROF's unit table (artifacts/rof/unit_roles.csv), one row per unit
    images: torch.Tensor               # the probe images, uint8 N x C x S x S (for the strips)
    rof_layer: str                     # the dissected block whose channels are ROF's units
    # layer_rof's roles per dissected layer it computed (netunits.layer_roles.read_layer_roles)
    layer_roles: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass
class DissectReportResult:
    tables: dict[str, list[dict]]      # per layer, one row per unit (methods.dissection.unit_rows)
    unit_roles: list[dict]             # ROF's table with the ROF block's concept, IoU and detector
    metrics: dict
    concepts_figure: Any               # matplotlib figures
    strips_figure: Any

    def summary(self) -> str:
        return "\n".join(f"{name}: {m['detectors']} of {m['units']} units are detectors, {m['unique_concepts']} "
                         f"unique concepts, mean best IoU {m['mean_best_iou']:.4f}"
                         for name, m in self.metrics["layers"].items())


def tallies_from_dict(tallies: Mapping[str, Any]) -> DissectResult:
    """A tallies file's dict (DissectResult.to_dict) as the DissectResult it was written from."""
    return DissectResult(tallies["layers"], tallies["quantile"], tallies["mask_size"], tallies["concepts"],
                         tallies["categories"], tallies["checkpoint_sha256"],
                         {name: LayerTallies(**t) for name, t in tallies["per_layer"].items()})


def load_dissect_report_inputs(paths: Mapping[str, Path], source: str = "params.yaml") -> DissectReportInputs:
    """The tallies, ROF's unit table and the probe images; the ROF block from the checkpoint's
    architecture (the block whose channels the final layer's pooled inputs average), checked
    against both. source: the params file that messages name."""
    raw = load_checked(paths["tallies"], {"per_layer": lambda v: isinstance(v, dict),
                                          "concepts": lambda v: isinstance(v, list)}, "dissection tallies")
    try:
        tallies = tallies_from_dict(raw)
    except (KeyError, TypeError):
        raise PipelineError(f"{paths['tallies']}: not valid dissection tallies (entries missing or malformed); "
                            f"rebuild them with `dvc repro -f dissect`") from None
    arch = load_checkpoint_file(paths["model"])["arch"]
    rof_layer = get_architecture(arch).last_block
    if rof_layer not in tallies.per_layer:
        raise PipelineError(f"{source}: 'dissect.layers' is {list(tallies.per_layer)!r}; it must include "
                            f"{rof_layer}, the block of {arch} whose channels are ROF's units")
    roles = read_csv(paths["rof_roles"], numeric=False)
    n_units = len(tallies.per_layer[rof_layer].thresholds)
    if len(roles["unit"]) != n_units:
        raise PipelineError(f"{paths['rof_roles']}: {len(roles['unit'])} units, but {rof_layer} has {n_units}; "
                            f"rerun `dvc repro rof_sweep`")
    layer_roles = {}
    for layer, t in tallies.per_layer.items():
        found = read_layer_roles(paths["layer_rof_dir"], layer, len(t.thresholds))
        if found is not None:
            layer_roles[layer] = found
    return DissectReportInputs(tallies, roles, load_probe(paths["probe"])["images"], rof_layer, layer_roles)


def picture(image: torch.Tensor):
    """uint8 C x S x S -> S x S (grey) or S x S x 3 for imshow."""
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _strips(inputs: DissectReportInputs, rows: list[dict], threshold: float):
    """The ROF block's STRIP_UNITS best units by IoU, each on its top images with its mask."""
    tallies, layer = inputs.tallies, inputs.rof_layer
    t, size = tallies.per_layer[layer], tallies.mask_size
    strip_rows = []
    for unit in sorted(range(len(rows)), key=lambda u: -rows[u]["iou"])[:STRIP_UNITS]:
        maps = t.top_maps[unit][:, None]                                            # k x 1 x h x w
        masks = unit_masks(maps.transpose(0, 1), t.thresholds[unit:unit + 1], size)[0]
        pictures = [(picture(inputs.images[int(i)]), masks[j].view(size, -1).numpy())
                    for j, i in enumerate(t.top_images[unit])]
        strip_rows.append((strip_label(layer, unit, rows[unit]["concept"], rows[unit]["iou"]), pictures,
                           rows[unit]["iou"]))
    return strips_figure(strip_rows, threshold)


def run_dissect_report(inputs: DissectReportInputs, config: Any) -> DissectReportResult:
    """config: the dissect section (iou_threshold). Each layer's rows end with its own ROF roles
    (layer_role_acc, layer_role_loss), "not computed" where layer_rof did not compute the layer;
    the metrics of such a layer add detectors per role (by_layer_role)."""
    threshold, tallies = config.iou_threshold, inputs.tallies
    names = [c["name"] for c in tallies.concepts]
    categories = [c["category"] for c in tallies.concepts]
    tables = {}
    for layer, t in tallies.per_layer.items():
        rows = unit_rows(t.iou(), t.thresholds, names, categories, threshold)
        roles = roles_or_not_computed(inputs.layer_roles.get(layer), len(rows))
        tables[layer] = [{**row, **{key: values[u] for key, values in roles.items()}} for u, row in enumerate(rows)]
    metrics = {"iou_threshold": threshold,
               "layers": {layer: detector_summary(rows) for layer, rows in tables.items()},
               "overall": detector_summary([r for rows in tables.values() for r in rows])}
    for layer, rows in tables.items():
        if layer in inputs.layer_roles:
            by_role = [{**row, "category_acc": row["layer_role_acc"]} for row in rows]
            metrics["layers"][layer]["by_layer_role"] = role_summary(by_role, CATEGORIES)
    rof_rows = tables[inputs.rof_layer]
    joined = [{**{key: values[u] for key, values in inputs.roles.items()}, "concept": rof_rows[u]["concept"],
               "iou": rof_rows[u]["iou"], "detector": rof_rows[u]["detector"]} for u in range(len(rof_rows))]
    metrics["by_role"] = role_summary(joined, CATEGORIES)
    concepts = concepts_per_layer_figure({layer: detectors_per_concept(rows) for layer, rows in tables.items()},
                                         threshold)
    return DissectReportResult(tables, joined, metrics, concepts, _strips(inputs, rof_rows, threshold))


def write_dissect_report(result: DissectReportResult, paths: Mapping[str, Path]) -> None:
    """paths: dissect_layers (a folder: <layer>.csv each), dissect_roles, dissect_metrics and the two figures."""
    layer_paths = [Path(paths["dissect_layers"]) / f"{layer}.csv" for layer in result.tables]
    figures = ((result.concepts_figure, paths["dissect_concepts_figure"]),
               (result.strips_figure, paths["dissect_strips_figure"]))
    remove_stale_temps(*layer_paths, paths["dissect_roles"], paths["dissect_metrics"], *(path for _, path in figures))
    for rows, path in zip(result.tables.values(), layer_paths):
        write_csv(rows, path)
    write_csv(result.unit_roles, paths["dissect_roles"])
    write_json(result.metrics, paths["dissect_metrics"])
    for figure, path in figures:
        save_figure(figure, path, FIGURE_DPI)
        close(figure)
