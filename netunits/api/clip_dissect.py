"""CLIP-Dissect's open-vocabulary unit descriptions (stage clip_dissect) as one call: for every
layer of the config, each unit's description (soft-WPMI by default) and two runners-up, from a
concept-image matrix built from the probe set's own annotations or from an open_clip model with
local weights, and how the descriptions agree with network dissection's labels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from netunits.activations import iterate_activations
from netunits.clip_models import image_embeddings, load_model, text_embeddings
from netunits.data.probe import load_probe, unpack_masks
from netunits.errors import PipelineError, load_failure
from netunits.files import file_sha256, read_csv, remove_stale_temps, write_csv, write_json
from netunits.methods.clip_dissect import (
    agreement_metrics,
    annotation_matrix,
    best_concepts,
    overall_agreement,
    parse_concepts,
    pixel_coverage,
    similarity_blocks,
    unit_summary,
)
from netunits.models.registry import load_checkpoint
from netunits.plots import close, descriptions_figure, save_figure

FIGURE_TOP = 15         # descriptions per layer in the figure
FIGURE_DPI = 110
N_BEST = 3              # the description and two runners-up per unit
MASK_BATCH = 250        # probe images whose masks are unpacked at once (annotations source)
DESCRIPTION_COLUMNS = ("layer", "unit", "description", "similarity")    # the reference's descriptions file


@dataclass
class ClipDissectInputs:
    model: torch.nn.Module
    input_spec: Mapping[str, Any]       # the checkpoint's "input"
    probe: Mapping[str, Any]            # load_probe's dict
    concepts: list[str]                 # the concept names scored
    concepts_sha256: str | None         # of the concept file (None: the probe set's own concepts)
    dissected: dict[str, dict[str, list[str]]]   # network dissection's table per layer, where comparable


@dataclass
class ClipDissectResult:
    tables: dict[str, list[dict]]       # per layer: layer, unit, description, similarity, the runners-up
    metrics: dict
    figure: Any                         # matplotlib figure: the most frequent descriptions per layer

    def descriptions(self) -> list[dict]:
        """The reference's four columns over every layer."""
        return [{key: r[key] for key in DESCRIPTION_COLUMNS} for rows in self.tables.values() for r in rows]

    def summary(self) -> str:
        lines = []
        for layer, m in self.metrics["layers"].items():
            compared = "" if m["agreement_with_dissection"] is None else \
                f", agreement with network dissection {m['agreement_with_dissection']:.3f} " \
                f"(chance {m['chance_agreement']:.3f})"
            lines.append(f"{layer}: {m['units']} units, {m['unique_descriptions']} unique descriptions{compared}")
        return "\n".join(lines)


def read_concept_file(path: str | Path, source: str = "params.yaml") -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{source}: 'clip_dissect.concepts' is {str(path)!r}; no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a readable UTF-8 text file ({load_failure(exc)})") from None
    names = parse_concepts(text)
    if not names:
        raise PipelineError(f"{path}: no concepts in the concept file (one per line; blank lines and repeats "
                            f"are ignored)")
    return names


def load_clip_dissect_inputs(paths: Mapping[str, Path], config: Any, source: str = "params.yaml") -> ClipDissectInputs:
    """The checkpoint, the probe set, the concept file config.concepts names (None: the probe set's
    concepts) and, where its vocabulary holds every concept scored, network dissection's table of
    each of config.layers that has one (paths["dissect_layers"]/<layer>.csv)."""
    probe = load_probe(paths["probe"])
    probe_names = [c["name"] for c in probe["concepts"]]
    names = probe_names if config.concepts is None else read_concept_file(config.concepts, source)
    model, checkpoint = load_checkpoint(paths["model"])
    if probe["images"].shape[-1] != checkpoint["image_size"]:
        raise PipelineError(f"{paths['probe']}: images are {probe['images'].shape[-1]} px but the model was "
                            f"trained on {checkpoint['image_size']} px; rerun `dvc repro probe_concepts`")
    dissected = {}
    if set(names) <= set(probe_names):
        for layer in config.layers:
            path = Path(paths["dissect_layers"]) / f"{layer}.csv"
            if path.exists():
                dissected[layer] = read_csv(path, numeric=False)
    return ClipDissectInputs(model, checkpoint["input"], probe, names,
                             None if config.concepts is None else file_sha256(config.concepts), dissected)


def similarity_constants(config: Any) -> tuple[dict, str | None]:
    """The similarity's keyword arguments, and the param naming its top_k (None: it reads none)."""
    method = config.similarity
    if method == "cos_similarity":
        return {}, None
    constants = {"top_k": getattr(config, f"{method}_top_k"), "a": getattr(config, f"{method}_a"),
                 "lam": getattr(config, f"{method}_lambda"), "min_prob": config.min_prob}
    if method == "soft_wpmi":
        constants.update(p_start=config.soft_wpmi_p_start, p_end=config.soft_wpmi_p_end)
    return constants, f"clip_dissect.{method}_top_k"


def probe_coverage(probe: Mapping[str, Any]) -> torch.Tensor:
    """Probe images x pixel concepts: the share of each image each pixel-level concept covers, the
    masks unpacked MASK_BATCH images at a time."""
    return torch.cat([pixel_coverage(unpack_masks(probe["pixel_masks"][start:start + MASK_BATCH], probe["mask_size"]))
                      for start in range(0, len(probe["images"]), MASK_BATCH)])


def probe_annotation_matrix(probe: Mapping[str, Any], names: list[str], quantile: float) -> torch.Tensor:
    """The annotations source's score matrix, probe images x names (methods.clip_dissect.annotation_matrix),
    the masks unpacked MASK_BATCH images at a time."""
    concepts = probe["concepts"]
    return annotation_matrix(probe_coverage(probe), probe["image_labels"], probe["annotated"],
                             [probe["categories"].index(c["category"]) for c in concepts],
                             [c["name"] for c in concepts], names, quantile)


def unit_summaries(model: torch.nn.Module, images: torch.Tensor, layers: list[str], pool: str, batch_size: int,
                   runtime: Any, input_spec: Mapping[str, Any], source: str = "params.yaml") -> dict[str, torch.Tensor]:
    """Each unit's value per probe image (methods.clip_dissect.unit_summary): {layer: images x units}."""
    model.to(runtime.device, memory_format=torch.channels_last)
    parts = {layer: [] for layer in layers}
    for _, outputs, _ in iterate_activations(model, images, layers, batch_size, runtime.device, runtime.precision,
                                             input_spec, desc="units", key="clip_dissect.layers", source=source):
        for layer, output in outputs.items():
            parts[layer].append(unit_summary(output, pool))
    return {layer: torch.cat(values) for layer, values in parts.items()}


def description_rows(layer: str, values: torch.Tensor, indices: torch.Tensor, names: list[str]) -> list[dict]:
    """One row per unit from best_concepts' (values, indices): the description and two runners-up
    with their similarities (empty where there are fewer concepts)."""
    rows = []
    for unit in range(len(values)):
        row = {"layer": layer, "unit": unit}
        for rank, prefix in enumerate(("", "second", "third")):
            found = rank < values.shape[1]
            row[prefix or "description"] = names[int(indices[unit, rank])] if found else ""
            row[f"{prefix}_similarity" if prefix else "similarity"] = float(values[unit, rank]) if found else ""
        rows.append(row)
    return rows


def run_clip_dissect(inputs: ClipDissectInputs, config: Any, runtime: Any, source: str = "params.yaml",
                     summaries: dict[str, torch.Tensor] | None = None) -> ClipDissectResult:
    """config: the clip_dissect section; runtime: device and precision; source: the params file
    that messages name; summaries: the units' values per probe image ({layer: images x units}),
    computed here when None (netunits.analysis_engine computes them in shards on an engine)."""
    probe, names, layers, method = inputs.probe, inputs.concepts, list(config.layers), config.similarity
    constants, top_k_key = similarity_constants(config)
    n_images = len(probe["images"])
    if top_k_key and constants["top_k"] > n_images:
        raise PipelineError(f"{source}: '{top_k_key}' is {constants['top_k']}; it must be at most the probe "
                            f"set's {n_images} images")
    if config.source == "annotations":
        probe_names = [c["name"] for c in probe["concepts"]]
        unknown = [name for name in names if name not in probe_names]
        if unknown:
            raise PipelineError(f"{config.concepts}: the annotations source scores only the probe set's "
                                f"concepts, and {unknown[0]!r} is not one ({', '.join(probe_names)})")
    else:
        clip, preprocess, tokenizer = load_model(config.model, config.weights, runtime.device, source=source)

    if summaries is None:
        summaries = unit_summaries(inputs.model, probe["images"], layers, config.pool, config.batch_size, runtime,
                                   inputs.input_spec, source)
    dissected = {layer: table for layer, table in inputs.dissected.items() if layer in summaries}
    for layer, table in dissected.items():
        if len(table["unit"]) != summaries[layer].shape[1]:
            raise PipelineError(f"network dissection's table of {layer} has {len(table['unit'])} units, but the "
                                f"model's {layer} has {summaries[layer].shape[1]}; rerun `dvc repro dissect_report`")

    # the concept-image scores: CLIP's cosine, or the annotations
    if config.source == "clip":
        images = image_embeddings(clip, preprocess, probe["images"], config.batch_size, runtime.device,
                                  runtime.precision)
        texts = text_embeddings(clip, tokenizer, names, config.batch_size, runtime.device, runtime.precision)
        scores = images @ texts.T
    else:
        scores = probe_annotation_matrix(probe, names, config.annotation_quantile)
    # an annotated concept on no probe image (CIFAR-10's dominant_orange) describes nothing, yet
    # soft-WPMI's -lambda log P(c) would not penalise it: it would win wherever the others' lift is below 1
    absent = [name for name, column in zip(names, scores.T) if not bool(column.any())] \
        if config.source == "annotations" else []
    if absent:
        kept = [i for i, name in enumerate(names) if name not in absent]
        names, scores = [names[i] for i in kept], scores[:, kept]

    tables, counts = {}, {}
    metrics = {"source": config.source, "similarity": method, "pool": config.pool, "concepts": len(names),
               "absent_concepts": absent,
               "concepts_sha256": inputs.concepts_sha256,
               "weights_sha256": file_sha256(config.weights) if config.source == "clip" else None,
               "probe_images": n_images, "layers": {}}
    for layer in layers:
        values, indices = best_concepts(similarity_blocks(method, scores, summaries[layer], **constants), N_BEST)
        tables[layer] = description_rows(layer, values, indices, names)
        described = [r["description"] for r in tables[layer]]
        counts[layer] = {d: described.count(d) for d in dict.fromkeys(described)}
        activations = summaries[layer]
        entry = {"units": len(described), "unique_descriptions": len(counts[layer]),
                 "constant_units": int((activations.amax(0) == activations.amin(0)).sum()),
                 "agreement_with_dissection": None, "chance_agreement": None, "dissection_detectors": None,
                 "agreement_on_detectors": None}
        if layer in dissected:
            entry.update(agreement_metrics(described, dissected[layer]["concept"],
                                           [v == "1" for v in dissected[layer]["detector"]]))
        metrics["layers"][layer] = entry
    every = [r["description"] for rows in tables.values() for r in rows]
    metrics["overall"] = {"units": len(every), "unique_descriptions": len(set(every)),
                          "agreement_with_dissection": None, "chance_agreement": None}
    if dissected:
        metrics["overall"].update(overall_agreement(
            {layer: [r["description"] for r in tables[layer]] for layer in dissected},
            {layer: dissected[layer]["concept"] for layer in dissected}))
    figure = descriptions_figure(counts, FIGURE_TOP, f"CLIP-Dissect ({config.source}, {method}, "
                                                     f"{len(names)} concepts): most frequent descriptions")
    return ClipDissectResult(tables, metrics, figure)


def write_clip_dissect(result: ClipDissectResult, paths: Mapping[str, Path]) -> None:
    """paths: clip_layers (a folder: <layer>.csv each; tables of layers no longer described are
    removed), clip_descriptions, clip_metrics, clip_figure."""
    folder = Path(paths["clip_layers"])
    layer_paths = [folder / f"{layer}.csv" for layer in result.tables]
    remove_stale_temps(*layer_paths, paths["clip_descriptions"], paths["clip_metrics"], paths["clip_figure"])
    for rows, path in zip(result.tables.values(), layer_paths):
        write_csv(rows, path)
    write_csv(result.descriptions(), paths["clip_descriptions"])
    write_json(result.metrics, paths["clip_metrics"])
    save_figure(result.figure, paths["clip_figure"], FIGURE_DPI)
    close(result.figure)
    for stale in sorted(folder.glob("*.csv")):
        if stale not in layer_paths:
            stale.unlink()
