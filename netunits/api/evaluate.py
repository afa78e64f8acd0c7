"""Which answers can be trusted (stage evaluate): every method's answer per unit chosen on one part
of the probe set and scored on the other, against null networks, and against what zeroing the
unit does to the classes.

The probe set is split per class (netunits.methods.stats.balanced_split): each method chooses its
answer on the fit part only, by its own code and score:
  dissection    the concept of best IoU (dissect's thresholds, netunits.methods.dissection);
  formula       compose's beam search (netunits.methods.compose_search) over the fit images' masks;
  clip_dissect  CLIP-Dissect's similarity (annotations source) over the fit images;
  invert        INVERT's beam search over image-level presence (netunits.methods.invert), maximising
                the fit images' AUC.
On the held-out part each answer gets its method's own score (IoU; the similarity) and one score
common to all: the AUC of the unit's spatial maximum per image against the answer's presence on
the image (a pixel-level concept or a formula's mask is present where it covers at least
evaluate.min_coverage of the image), with Mann-Whitney's p-value.

Null baselines run the same code: the architecture with seeded random weights (random_init; its
thresholds from its own activations, by dissect's quantile), and the trained network on a probe
set whose annotations are permuted across images (permuted_labels). Per method and layer their
units' held-out AUCs form the null sample; a trained unit's empirical p-value is taken against
it and Benjamini-Hochberg at evaluate.fdr decides significance, per null kind.

Causal agreement, per dissected layer: stage ablate's drop of each class's accuracy and logit
margin when a unit is zeroed (on the held-out images: exactly for the block feeding the final
layer, by a forward pass per unit for earlier layers); an answer that names a class agrees when
that class is the one hurt most.

Planted units: a layer's first channels replaced by known functions of the probe's annotations
(netunits.methods.planted), run through the same code; per method the share it recovers of what
it can express, and whether the noise channel passes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from netunits.activations import iterate_activations
from netunits.api.ablate import heldout_split
from netunits.api.clip_dissect import probe_coverage, similarity_constants
from netunits.api.compose import positions_by_unit
from netunits.api.dissect import unit_thresholds
from netunits.data.probe import load_probe, probe_subset, unpack_masks
from netunits.errors import PipelineError
from netunits.files import file_sha256, load_checked, read_csv, remove_stale_temps, write_csv, write_json
from netunits.methods.bitmasks import gather, popcount_per_image
from netunits.methods.causal import class_effect, concept_class, formula_classes, most_hurt, named_class
from netunits.methods.clip_dissect import annotation_matrix, similarity_blocks, unit_summary
from netunits.methods.clip_dissect import best_concepts as clip_best
from netunits.methods.compose_search import Primitives, search_units
from netunits.methods.dissection import IoUTally, best_concepts, dissect_batch_chunks, unit_masks
from netunits.methods.formula import canonical, to_string
from netunits.methods.formula_masks import concept_masks, unit_mask_positions
from netunits.methods.invert import formula_labels, formula_string, invert_classes, invert_search
from netunits.methods.planted import fits, image_presence, missing_concepts, parse_planted, planted, planted_maps
from netunits.methods.stats import benjamini_hochberg, empirical_p, mann_whitney
from netunits.models.registry import build_model, get_architecture, load_checkpoint
from netunits.params import PARAMS_FILE
from netunits.runtime import Runtime, progress

METHODS = ("dissection", "formula", "clip_dissect", "invert")
FIGURE_DPI = 110


@dataclass
class EvaluateInputs:
    model: torch.nn.Module
    checkpoint: Mapping[str, Any]        # arch, n_classes, input (the input spec), sha256
    probe: Mapping[str, Any]
    tallies: Mapping[str, Any]           # dissect's: the trained network's thresholds per layer
    ablation: Mapping[str, Any]          # ablate's: per layer the drops of zeroing each unit
    roles: dict[str, list[str]]          # ROF's unit_roles.csv columns
    layer_roles: dict[str, dict[str, list[str]]]   # layer_rof's roles per layer (<layer>_roles.csv)
    influence: dict[str, list[str]]      # the influential filters' units.csv columns


@dataclass
class Settings:
    """What the analysis reads from the params: evaluate, dissect, compose and clip_dissect."""
    evaluate: Any
    dissect: Any
    compose: Any
    clip_dissect: Any


@dataclass
class Answers:
    """One network's answers on one labelling of the probe: per method and layer, columns of one
    value per unit (answer, fit_score, heldout_score, auc, p_mannwhitney)."""
    per_method: dict[str, dict[str, dict[str, list]]] = field(default_factory=dict)
    best_fit_iou: dict[str, torch.Tensor] = field(default_factory=dict)     # per layer: each unit's best fit IoU
    formulas: dict[str, list] = field(default_factory=dict)                  # per compose layer: trees or None
    invert: dict[str, list] = field(default_factory=dict)                    # per layer: INVERT's steps or None
    seconds: float = 0.0


@dataclass
class EvaluateResult:
    tables: dict[str, list[dict]]
    metrics: dict
    figure: Any
    seconds: dict[str, float]            # wall time per network analysed (not in the metrics: they stay reproducible)

    def summary(self) -> str:
        lines = []
        for method, layers in self.metrics["methods"].items():
            for layer, m in layers.items():
                shares = ", ".join(f"{kind} {share:.1%}" for kind, share in m["share_significant"].items())
                causal = "" if m.get("causal_agreement") is None else \
                    f", causal agreement {m['causal_agreement']:.2f} of {m['class_answers']}"
                lines.append(f"{method} {layer}: held-out AUC {m['mean_heldout_auc']:.3f} (null "
                             + ", ".join(f"{k} {v:.3f}" for k, v in m["null_mean_auc"].items())
                             + f"); significant: {shares or 'no null'}{causal}")
        for layer, counts in self.metrics["detectors"].items():
            lines.append(f"{layer}: units at IoU >= {self.metrics['iou_threshold']} on the fit part: trained "
                         f"{counts['trained']}, random_init {counts.get('random_init', 'not run')}")
        for layer, causal in self.metrics["causal"].items():
            lines.append(f"{layer} ablation ({causal['how']}, {causal['heldout_images']} held-out images): causal "
                         "agreement " + ", ".join(f"{m} {v['share']:.2f} of {v['answers']}"
                                                  for m, v in causal["agreement"].items() if v["answers"]))
        planted = self.metrics.get("planted")
        if planted:
            lines.append(f"planted units on {planted['layer']} ({', '.join(planted['units'])}): recovered " + ", ".join(
                f"{m} {len(v['recovered'])} of {v['expressible']}" for m, v in planted["methods"].items())
                + "; noise significant for " + (", ".join(m for m, v in planted["methods"].items()
                                                          if any(v["noise_significant_mannwhitney"])) or "no method"))
        lines.append("wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# loading and checking
# --------------------------------------------------------------------------------------------
def load_evaluate_inputs(paths: Mapping[str, Path]) -> EvaluateInputs:
    tallies = load_checked(paths["tallies"], {"per_layer": lambda v: isinstance(v, dict)}, "dissection tallies")
    if tallies.get("checkpoint_sha256") != file_sha256(paths["model"]):
        raise PipelineError(f"{paths['tallies']}: made from another checkpoint than {paths['model']}; "
                            "rerun `dvc repro dissect`")
    ablation = load_checked(paths["ablation"], {"per_layer": lambda v: isinstance(v, dict)}, "ablation")
    if ablation.get("checkpoint_sha256") != tallies["checkpoint_sha256"]:
        raise PipelineError(f"{paths['ablation']}: made from another checkpoint than {paths['model']}; "
                            "rerun `dvc repro ablate`")
    model, checkpoint = load_checkpoint(paths["model"])
    probe = load_probe(paths["probe"])
    if probe["images"].shape[-1] != checkpoint["image_size"]:
        raise PipelineError(f"{paths['probe']}: images are {probe['images'].shape[-1]} px but the model was "
                            f"trained on {checkpoint['image_size']} px; rerun `dvc repro probe_concepts`")
    layer_roles = {}
    for path in sorted(Path(paths["layer_rof_dir"]).glob("*_roles.csv")):
        layer_roles[path.name[:-len("_roles.csv")]] = read_csv(path, numeric=False)
    return EvaluateInputs(model, checkpoint, probe, tallies, ablation, read_csv(paths["rof_roles"], numeric=False),
                          layer_roles, read_csv(paths["influence_units"], numeric=False))


def check_settings(inputs: EvaluateInputs, settings: Settings,
                   source: str = PARAMS_FILE) -> tuple[torch.Tensor, torch.Tensor]:
    """The split, after every check that can fail before any model runs: the layers were
    dissected, the held-out part can reach significance, top_k fits the fit part."""
    probe, config = inputs.probe, settings.evaluate
    for layer in settings.dissect.layers:
        if layer not in inputs.tallies["per_layer"]:
            raise PipelineError(f"{source}: 'dissect.layers' has {layer!r}, which the tallies lack; rerun "
                                f"`dvc repro dissect`")
    for layer in settings.compose.layers:
        if layer not in settings.dissect.layers:
            raise PipelineError(f"{source}: 'compose.layers' has {layer!r}, which dissect.layers lacks")
    fit, held = heldout_split(probe, config, source)
    if config.planted:
        try:
            formulas = parse_planted(config.planted)
        except PipelineError as error:
            raise PipelineError(f"{source}: 'evaluate.planted' has a formula that does not parse ({error}); it must "
                                f"be formulas over the probe's concepts with AND, OR, AND NOT, or noise") from None
        names = [c["name"] for c in probe["concepts"]]
        missing = missing_concepts(formulas, names)
        if missing:
            raise PipelineError(f"{source}: 'evaluate.planted' names {missing[0]!r}, which the probe lacks; it must "
                                f"name the probe's concepts ({', '.join(names[:8])}, ...) or noise")
    split = inputs.ablation.get("split", {})
    if (split.get("heldout_fraction"), split.get("seed")) != (config.heldout_fraction, config.seed):
        raise PipelineError(f"{source}: 'evaluate.heldout_fraction' and 'evaluate.seed' are {config.heldout_fraction} "
                            f"and {config.seed}, but the ablation used {split.get('heldout_fraction')} and "
                            f"{split.get('seed')}; rerun `dvc repro ablate`")
    if settings.clip_dissect.source == "annotations":
        constants, top_k_key = similarity_constants(settings.clip_dissect)
        if top_k_key and constants["top_k"] > len(fit):
            raise PipelineError(f"{source}: '{top_k_key}' is {constants['top_k']}; evaluate chooses CLIP-Dissect's "
                                f"descriptions on the {len(fit)} fit images, so it must be at most that")
    return fit, held


# --------------------------------------------------------------------------------------------
# one network, one labelling
# --------------------------------------------------------------------------------------------
def presence(probe: Mapping[str, Any], coverage: torch.Tensor, min_coverage: float) -> torch.Tensor:
    """bool images x concepts: a pixel-level concept covering at least min_coverage of the image, an
    image-level label as given; absent where the concept's category is not annotated."""
    category = [probe["categories"].index(c["category"]) for c in probe["concepts"]]
    present = torch.cat([coverage >= min_coverage - 1e-12, probe["image_labels"]], dim=1)
    return present & probe["annotated"][:, category]


def subset_rank(indices: torch.Tensor, n: int) -> np.ndarray:
    """For every probe image its position within `indices` (-1 outside)."""
    rank = np.full(n, -1, dtype=np.int64)
    rank[indices.numpy()] = np.arange(len(indices))
    return rank


def scan(model: torch.nn.Module, input_spec: Any, probe: Mapping[str, Any], thresholds: Mapping[str, torch.Tensor],
         fit: torch.Tensor, held: torch.Tensor, settings: Settings, runtime: Runtime,
         grids: dict[str, int], desc: str, source: str = PARAMS_FILE) -> dict[str, Any]:
    """One pass of the probe through the model: per layer each unit's spatial maximum and CLIP's
    summary per image, the IoU counts on the fit and held-out images, the compose layers' mask
    positions on each part."""
    dissect, compose = settings.dissect, settings.compose
    layers = list(dissect.layers)
    concepts, categories = probe["concepts"], probe["categories"]
    n_pixel = sum(c["level"] == "pixel" for c in concepts)
    category = [categories.index(c["category"]) for c in concepts]
    mask_size, n = probe["mask_size"], len(probe["images"])
    is_held = torch.zeros(n, dtype=torch.bool)
    is_held[held] = True
    ranks = {"fit": subset_rank(fit, n), "held": subset_rank(held, n)}
    tallies = {part: {layer: IoUTally(len(thresholds[layer]), n_pixel, len(concepts) - n_pixel, category,
                                      len(categories)) for layer in layers} for part in ("fit", "held")}
    sizes = {layer: mask_size if compose.resolution == "mask" else grids[layer] for layer in compose.layers}
    words = {layer: -(-sizes[layer] ** 2 // 64) for layer in compose.layers}
    found = {part: {layer: ([], []) for layer in compose.layers} for part in ("fit", "held")}
    peaks, summaries = {layer: [] for layer in layers}, {layer: [] for layer in layers}
    model.to(runtime.device, memory_format=torch.channels_last)
    for start, outputs, _ in iterate_activations(model, probe["images"], layers, settings.evaluate.batch_size,
                                                 runtime.device, runtime.precision, input_spec, desc=desc,
                                                 key="dissect.layers", source=source):
        b = len(next(iter(outputs.values())))
        held_rows = is_held[start:start + b]
        parts = {"fit": torch.nonzero(~held_rows).flatten(), "held": torch.nonzero(held_rows).flatten()}
        pixel = unpack_masks(probe["pixel_masks"][start:start + b], mask_size)
        labels, annotated = probe["image_labels"][start:start + b], probe["annotated"][start:start + b]
        for layer in layers:
            maps = outputs[layer].float()
            if maps.dim() != 4:
                raise PipelineError(f"{source}: 'dissect.layers' has {layer!r}, whose output has no spatial maps")
            peaks[layer].append(maps.flatten(2).amax(2))
            summaries[layer].append(unit_summary(maps, settings.clip_dissect.pool))
            for part, rows in parts.items():
                if not len(rows):
                    continue
                part_maps = maps[rows]
                for first, last in dissect_batch_chunks(len(rows), maps.shape[1], mask_size * mask_size):
                    masks = unit_masks(part_maps[first:last], thresholds[layer], mask_size)
                    chosen = rows[first:last]
                    tallies[part][layer].update(masks, pixel[chosen], labels[chosen], annotated[chosen])
                if layer in sizes:
                    image, unit, position = unit_mask_positions(part_maps, thresholds[layer], sizes[layer])
                    global_image = rows[image].numpy() + start
                    flat = ranks[part][global_image] * words[layer] * 64 + position.numpy()
                    found[part][layer][0].append(unit.numpy())
                    found[part][layer][1].append(flat)
    positions = {part: {layer: positions_by_unit(*found[part][layer], len(thresholds[layer]))
                        for layer in compose.layers} for part in found}
    return {"peaks": {layer: torch.cat(v) for layer, v in peaks.items()},
            "summaries": {layer: torch.cat(v) for layer, v in summaries.items()},
            "tallies": tallies, "positions": positions, "sizes": sizes}


def score_answers(auc: torch.Tensor, p: torch.Tensor, chosen: torch.Tensor) -> tuple[list[float], list[float]]:
    """Each unit's AUC and p-value for its chosen column (units x concepts matrices)."""
    index = chosen.view(-1, 1)
    return auc.gather(1, index).flatten().tolist(), p.gather(1, index).flatten().tolist()


def answer_network(model: torch.nn.Module, input_spec: Any, probe: Mapping[str, Any],
                   thresholds: Mapping[str, torch.Tensor], fit: torch.Tensor, held: torch.Tensor, settings: Settings,
                   runtime: Runtime, grids: dict[str, int], desc: str = "evaluate",
                   source: str = PARAMS_FILE) -> Answers:
    """Every method's answer per unit on the fit part and its scores on the held-out part."""
    started = time.perf_counter()
    config = settings.evaluate
    found = scan(model, input_spec, probe, thresholds, fit, held, settings, runtime, grids, desc, source)
    names = [c["name"] for c in probe["concepts"]]
    coverage = probe_coverage(probe)
    present = presence(probe, coverage, config.min_coverage)
    answers = Answers()
    fit_probe, held_probe = probe_subset(probe, fit), probe_subset(probe, held)
    compose, clip = settings.compose, settings.clip_dissect
    for layer in settings.dissect.layers:
        peaks_held = found["peaks"][layer][held]
        auc, p = mann_whitney(peaks_held, present[held])                        # units x concepts, one pass
        fit_iou, held_iou = found["tallies"]["fit"][layer].iou(), found["tallies"]["held"][layer].iou()
        values, chosen = best_concepts(fit_iou, 1)
        answers.best_fit_iou[layer] = values[:, 0]
        unit_auc, unit_p = score_answers(auc, p, chosen)
        answers.per_method.setdefault("dissection", {})[layer] = {
            "answer": [names[int(i)] for i in chosen[:, 0]], "fit_score": values[:, 0].tolist(),
            "heldout_score": held_iou.gather(1, chosen).flatten().tolist(), "auc": unit_auc, "p_mannwhitney": unit_p}
        if clip.source == "annotations":
            constants, _ = similarity_constants(clip)
            category = [probe["categories"].index(c["category"]) for c in probe["concepts"]]

            def matrix(indices, category=category):
                return annotation_matrix(coverage[indices], probe["image_labels"][indices],
                                         probe["annotated"][indices], category, names, names,
                                         clip.annotation_quantile)
            summaries = found["summaries"][layer]
            best, described = clip_best(similarity_blocks(clip.similarity, matrix(fit), summaries[fit], **constants), 1)
            held_similarity = torch.cat([block for _, block in similarity_blocks(
                clip.similarity, matrix(held), summaries[held], **constants)], dim=1)
            unit_auc, unit_p = score_answers(auc, p, described)
            answers.per_method.setdefault("clip_dissect", {})[layer] = {
                "answer": [names[int(i)] for i in described[:, 0]], "fit_score": best[:, 0].tolist(),
                "heldout_score": held_similarity.gather(1, described).flatten().tolist(), "auc": unit_auc,
                "p_mannwhitney": unit_p}
        found_invert = invert_search(found["peaks"][layer][fit], present[fit], config.invert_beam,
                                     config.invert_max_length, 0.0, config.invert_max_fraction)
        holds = torch.stack([formula_labels(steps, present[held]) if steps else torch.zeros(len(held), dtype=torch.bool)
                             for steps, _ in found_invert], dim=1)
        i_auc, i_p = mann_whitney(peaks_held, holds, paired=True)
        answers.invert[layer] = [steps for steps, _ in found_invert]
        answers.per_method.setdefault("invert", {})[layer] = {
            "answer": ["" if steps is None else formula_string(steps, names) for steps, _ in found_invert],
            "fit_score": [value for _, value in found_invert], "heldout_score": i_auc.tolist(), "auc": i_auc.tolist(),
            "p_mannwhitney": i_p.tolist()}
        if layer in compose.layers:
            size = found["sizes"][layer]
            grid = grids[layer]
            fit_primitives = Primitives(concept_masks(fit_probe, compose.resolution, size, compose.downsample_min),
                                        grid, compose.connectors, compose.expand)
            held_primitives = Primitives(concept_masks(held_probe, compose.resolution, size, compose.downsample_min),
                                         grid, compose.connectors, compose.expand)
            results = search_units(fit_primitives, found["positions"]["fit"][layer], connectors=compose.connectors,
                                   beam=compose.beam, max_length=compose.max_length, candidates=compose.candidates,
                                   score=compose.score, r=compose.imrou_r, penalty=compose.length_penalty,
                                   progress=lambda items, d, layer=layer: progress(items, f"{desc} {layer} {d}"))
            formula_present = torch.zeros(len(held), len(results), dtype=torch.bool)
            held_iou = []
            for unit, result in enumerate(results):
                if result["formula"] is None:
                    held_iou.append(0.0)
                    continue
                bits = held_primitives.formula_bits(result["formula"])
                area = popcount_per_image(bits)
                formula_present[:, unit] = torch.from_numpy(area >= config.min_coverage * size * size - 1e-9)
                unit_positions = found["positions"]["held"][layer][unit]
                inter = float(gather(bits, unit_positions).sum())
                union = len(unit_positions) + float(area.sum()) - inter
                held_iou.append(inter / union if union > 0 else 0.0)
            f_auc, f_p = mann_whitney(peaks_held, formula_present, paired=True)
            answers.formulas[layer] = [r["formula"] for r in results]
            answers.per_method.setdefault("formula", {})[layer] = {
                "answer": ["" if r["formula"] is None else to_string(r["formula"]) for r in results],
                "fit_score": [r["iou"] for r in results], "heldout_score": held_iou, "auc": f_auc.tolist(),
                "p_mannwhitney": f_p.tolist()}
    answers.seconds = time.perf_counter() - started
    return answers


def random_thresholds(model: torch.nn.Module, input_spec: Any, probe: Mapping[str, Any], settings: Settings,
                      runtime: Runtime, source: str) -> dict[str, torch.Tensor]:
    """A network's own thresholds, as dissect computes them (its quantile over the whole probe set:
    no label is read, so the held-out part is not consulted about answers)."""
    run = dict(model=model.to(runtime.device, memory_format=torch.channels_last),
               batch_size=settings.evaluate.batch_size, device=runtime.device, precision=runtime.precision,
               input_spec=input_spec, key="dissect.layers", source=source)
    return unit_thresholds(run, probe["images"], list(settings.dissect.layers), settings.dissect.quantile, source)[1]


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def influence_classes(column: list[str], class_index: Mapping[str, int]) -> list[list[int]]:
    """Each unit's influential-for classes (units.csv's `a;b` names) as class indices."""
    return [[class_index[name] for name in cell.split(";") if name in class_index] for cell in column]


def run_evaluate(inputs: EvaluateInputs, settings: Settings, runtime: Runtime,
                 source: str = PARAMS_FILE) -> EvaluateResult:
    config = settings.evaluate
    fit, held = check_settings(inputs, settings, source)
    probe, checkpoint = inputs.probe, inputs.checkpoint
    per_layer = inputs.tallies["per_layer"]
    thresholds = {layer: per_layer[layer]["thresholds"] for layer in settings.dissect.layers}
    grids = {layer: per_layer[layer]["top_maps"].shape[-1] for layer in settings.dissect.layers}
    architecture = get_architecture(checkpoint["arch"])
    # planted units on the first compose layer (the one where every method runs)
    planted_layer = None
    if config.planted:
        planted_layer = settings.compose.layers[0] if settings.compose.layers else settings.dissect.layers[-1]
    trained = answer_network(inputs.model, checkpoint["input"], probe, thresholds, fit, held, settings, runtime, grids,
                             "trained", source)
    timings = {"trained": trained.seconds}
    nulls: dict[str, list[Answers]] = {}
    for kind in config.nulls:
        for seed in config.null_seeds:
            started = time.perf_counter()
            if kind == "random_init":
                torch.manual_seed(seed)
                model = build_model(checkpoint["arch"], checkpoint["n_classes"]).eval()
                own = random_thresholds(model, checkpoint["input"], probe, settings, runtime, source)
                found = answer_network(model, checkpoint["input"], probe, own, fit, held, settings, runtime, grids,
                                       f"random_init {seed}", source)
            else:
                order = torch.randperm(len(probe["images"]), generator=torch.Generator().manual_seed(seed))
                relabelled = probe_subset(probe, torch.arange(len(probe["images"])), annotations_from=order)
                found = answer_network(inputs.model, checkpoint["input"], relabelled, thresholds, fit, held, settings,
                                       runtime, grids, f"permuted {seed}", source)
            nulls.setdefault(kind, []).append(found)
            timings[f"{kind}_{seed}"] = time.perf_counter() - started

    # significance against each null kind, per method and layer
    tables: dict[str, list[dict]] = {method: [] for method in trained.per_method}
    # the checkpoint's sha256 lets the report tell these answers from another checkpoint's
    metrics: dict[str, Any] = {
        "checkpoint_sha256": checkpoint["sha256"],
        "split": {"fit": len(fit), "heldout": len(held), "heldout_fraction": config.heldout_fraction,
                  "seed": config.seed},
        "min_coverage": config.min_coverage, "fdr": config.fdr, "nulls": list(config.nulls),
        "null_seeds": list(config.null_seeds), "iou_threshold": settings.dissect.iou_threshold,
        "score": "held-out AUC of the unit's spatial maximum per image against the answer's presence",
        "methods": {}, "detectors": {}, "causal": None}
    significance: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for method, layers in trained.per_method.items():
        metrics["methods"][method] = {}
        for layer, columns in layers.items():
            auc = torch.tensor(columns["auc"], dtype=torch.float64)
            flags, entry = {}, {"units": len(auc), "mean_heldout_auc": float(auc.mean()),
                                "mean_fit_score": float(np.mean(columns["fit_score"])),
                                "mean_heldout_score": float(np.mean(columns["heldout_score"])),
                                "share_mannwhitney_below_fdr": float(
                                    benjamini_hochberg(torch.tensor(columns["p_mannwhitney"]), config.fdr)[0]
                                    .double().mean()),
                                "null_mean_auc": {}, "share_significant": {}}
            for kind, networks in nulls.items():
                null = torch.cat([torch.tensor(n.per_method[method][layer]["auc"], dtype=torch.float64)
                                  for n in networks])
                p = empirical_p(auc, null)
                significant, _ = benjamini_hochberg(p, config.fdr)
                columns[f"p_{kind}"] = p.tolist()
                flags[kind] = significant
                entry["null_mean_auc"][kind] = float(null.mean())
                entry["share_significant"][kind] = float(significant.double().mean())
            every = torch.stack(list(flags.values())).all(0) if flags else torch.zeros(len(auc), dtype=torch.bool)
            columns["significant"] = every.int().tolist()
            entry["share_significant_every_null"] = float(every.double().mean()) if flags else None
            significance[(method, layer)] = flags
            metrics["methods"][method][layer] = entry
    for layer in settings.dissect.layers:
        counts = {"trained": int((trained.best_fit_iou[layer] >= settings.dissect.iou_threshold).sum()),
                  "units": len(trained.best_fit_iou[layer])}
        if "random_init" in nulls:
            counts["random_init"] = [int((n.best_fit_iou[layer] >= settings.dissect.iou_threshold).sum())
                                     for n in nulls["random_init"]]
            counts["random_init_mean_best_iou"] = float(np.mean([float(n.best_fit_iou[layer].mean())
                                                                 for n in nulls["random_init"]]))
        counts["trained_mean_best_iou"] = float(trained.best_fit_iou[layer].mean())
        metrics["detectors"][layer] = counts

    # causal agreement per layer, from ablate's drops on the held-out images
    causal_rows, metrics["causal"] = [], {}
    for layer, drops in inputs.ablation["per_layer"].items():
        if layer not in settings.dissect.layers:
            continue
        roles = inputs.roles if layer == architecture.last_block else inputs.layer_roles.get(layer, {})
        influence = inputs.influence if layer == architecture.last_block else {}
        metrics["causal"][layer], rows = causal_agreement(inputs, trained, layer, drops, roles, influence)
        causal_rows += rows
    for method, layers in trained.per_method.items():
        for layer, columns in layers.items():
            keys = [k for k in columns if k != "causal"]
            for unit in range(len(columns["answer"])):
                row = {"layer": layer, "unit": unit, **{k: columns[k][unit] for k in keys}}
                row.update(columns.get("causal", {}).get(unit, {"names_class": "", "margin_effect": "",
                                                                 "accuracy_effect": "", "most_hurt": ""}))
                tables[method].append(row)
    if causal_rows:
        tables["influence"] = causal_rows
    for layer, causal in metrics["causal"].items():
        for method, value in causal["agreement"].items():
            if method in metrics["methods"] and layer in metrics["methods"][method]:
                metrics["methods"][method][layer]["causal_agreement"] = value["share"]
                metrics["methods"][method][layer]["class_answers"] = value["answers"]
    if planted_layer is not None:
        started = time.perf_counter()
        metrics["planted"] = planted_recovery(inputs.model, checkpoint["input"], probe, planted_layer,
                                              grids[planted_layer], fit, held, settings, runtime, nulls, source)
        timings["planted"] = time.perf_counter() - started
    figure = null_figure(trained, nulls)
    return EvaluateResult(tables, metrics, figure, timings)


def causal_agreement(inputs: EvaluateInputs, trained: Answers, layer: str, drops: Mapping[str, Any],
                     roles: Mapping[str, list[str]], influence: Mapping[str, list[str]]) -> tuple[dict, list[dict]]:
    """Per method the share of class-naming answers of `layer` whose class is the one whose margin
    drops most when the unit is zeroed (ablate's drops), their mean effect, the influential
    filters' agreement where `influence` (their table) is given, and the mean drop per ROF role
    (`roles`: a roles table of this layer's units, or empty)."""
    accuracy, margin = drops["accuracy"], drops["margin"]
    n_classes = inputs.checkpoint["n_classes"]
    hurt = most_hurt(margin)
    agreement = {}

    def record(method: str, pairs: list[tuple[int, int]]) -> None:
        agrees = [int(hurt[u]) == k for u, k in pairs]
        agreement[method] = {"answers": len(pairs), "share": float(np.mean(agrees)) if pairs else None,
                             "mean_margin_effect": float(np.mean([class_effect(margin, u, k) for u, k in pairs]))
                             if pairs else None,
                             "mean_accuracy_effect": float(np.mean([class_effect(accuracy, u, k) for u, k in pairs]))
                             if pairs else None,
                             "chance": 1 / n_classes}

    concept_names = [c["name"] for c in inputs.probe["concepts"]]
    for method, layers in trained.per_method.items():
        if layer not in layers:
            continue
        columns = layers[layer]
        if method == "formula":
            named = [named_class(formula_classes(f)) for f in trained.formulas[layer]]
        elif method == "invert":
            named = [named_class(invert_classes(steps, concept_names)) for steps in trained.invert[layer]]
        else:
            named = [concept_class(answer) for answer in columns["answer"]]
        pairs = [(u, k) for u, k in enumerate(named) if k is not None and k < n_classes]
        record(method, pairs)
        columns["causal"] = {u: {"names_class": "" if k is None else k,
                                 "margin_effect": "" if k is None else class_effect(margin, u, k),
                                 "accuracy_effect": "" if k is None else class_effect(accuracy, u, k),
                                 "most_hurt": int(hurt[u])} for u, k in enumerate(named)}
    # the influential filters: every (unit, class) of the table's sets
    influence_key = next((k for k in influence if k.startswith("influential_for")), None)
    rows = []
    if influence_key and len(influence[influence_key]) == margin.shape[0]:
        names = [str(c) for c in range(n_classes)]
        class_index = {name: i for i, name in enumerate(inputs.checkpoint.get("classes") or names)}
        sets = influence_classes(influence[influence_key], class_index)
        pairs = [(u, k) for u, classes in enumerate(sets) for k in classes]
        record("influence", pairs)
        rows = [{"layer": layer, "unit": u, "class": k, "role": inputs.roles["category_acc"][u],
                 "margin_effect": class_effect(margin, u, k), "accuracy_effect": class_effect(accuracy, u, k),
                 "most_hurt": int(hurt[u]), "agrees": int(int(hurt[u]) == k)} for u, k in pairs]
    role_column = roles.get("category_acc", [])
    by_role = {}
    if len(role_column) == margin.shape[0]:
        for role in dict.fromkeys(role_column):
            members = [u for u, r in enumerate(role_column) if r == role]
            by_role[role] = {"units": len(members),
                             "mean_accuracy_drop": float(accuracy[members].nanmean()),
                             "mean_margin_drop": float(margin[members].nanmean())}
    return {"layer": layer, "how": drops["how"], "heldout_images": drops["images"], "agreement": agreement,
            "by_rof_role": by_role}, rows


def planted_recovery(model: torch.nn.Module, input_spec: Any, probe: Mapping[str, Any], layer: str, grid: int,
                     fit: torch.Tensor, held: torch.Tensor, settings: Settings, runtime: Runtime,
                     nulls: Mapping[str, list[Answers]], source: str = PARAMS_FILE) -> dict:
    """The planted units (evaluate.planted, the first channels of `layer` of the trained network)
    through every method's code: per method the share of the planted formulas it can express that
    it names, and whether the noise units pass Benjamini-Hochberg among the planted units' held-out
    Mann-Whitney p-values, with their empirical p-values against each null's units."""
    config = settings.evaluate
    names = [c["name"] for c in probe["concepts"]]
    formulas = parse_planted(config.planted)
    only = Settings(config, settings.dissect.model_copy(update={"layers": [layer]}),
                    settings.compose.model_copy(update={"layers": [layer]}),
                    settings.clip_dissect.model_copy(update={"layers": [layer]}))
    with planted(model, layer, planted_maps(probe, formulas, grid, config.seed)):
        thresholds = random_thresholds(model, input_spec, probe, only, runtime, source)
        answers = answer_network(model, input_spec, probe, thresholds, fit, held, only, runtime, {layer: grid},
                                 "planted", source)
    present = presence(probe, probe_coverage(probe), config.min_coverage)
    invert_ops = ("AND", "OR", "AND NOT")
    result: dict[str, Any] = {"layer": layer, "units": list(config.planted), "methods": {}}
    for method, layers in answers.per_method.items():
        columns = layers[layer]
        recovered, expressible = [], []
        for unit, formula in enumerate(formulas):
            if formula is None:
                continue
            if method in ("dissection", "clip_dissect"):
                can, got = isinstance(formula, str), columns["answer"][unit] == formula
            elif method == "formula":
                can = fits(formula, settings.compose.max_length, settings.compose.connectors)
                found = answers.formulas[layer][unit]
                got = found is not None and canonical(found) == canonical(formula)
            else:   # INVERT names a formula over image-level presence: the same images must satisfy it
                can = fits(formula, config.invert_max_length, invert_ops)
                steps = answers.invert[layer][unit]
                got = steps is not None and torch.equal(formula_labels(steps, present),
                                                        image_presence(formula, present, names))
            if can:
                expressible.append(config.planted[unit])
                if got:
                    recovered.append(config.planted[unit])
        noise = [u for u, f in enumerate(formulas) if f is None]
        units = len(formulas)
        significant, _ = benjamini_hochberg(torch.tensor(columns["p_mannwhitney"][:units]), config.fdr)
        entry = {"answers": columns["answer"][:units], "heldout_auc": columns["auc"][:units],
                 "expressible": len(expressible), "recovered": recovered,
                 "recovery_rate": len(recovered) / len(expressible) if expressible else None,
                 "noise_significant_mannwhitney": [bool(significant[u]) for u in noise]}
        for kind, networks in nulls.items():
            if layer in networks[0].per_method.get(method, {}):
                null = torch.cat([torch.tensor(n.per_method[method][layer]["auc"], dtype=torch.float64)
                                  for n in networks])
                p = empirical_p(torch.tensor(columns["auc"][:units], dtype=torch.float64), null)
                entry[f"noise_p_{kind}"] = [float(p[u]) for u in noise]
        result["methods"][method] = entry
    return result


def null_figure(trained: Answers, nulls: Mapping[str, list[Answers]]):
    """Histograms of the held-out AUC per method (rows) and layer (columns): trained against each null."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = list(trained.per_method)
    layers = sorted({layer for m in methods for layer in trained.per_method[m]},
                    key=lambda x: list(trained.per_method["dissection"]).index(x)
                    if x in trained.per_method["dissection"] else 99)
    figure, axes = plt.subplots(len(methods), len(layers), figsize=(3.2 * len(layers), 2.4 * len(methods)),
                                squeeze=False)
    bins = np.linspace(0, 1, 41)
    for row, method in enumerate(methods):
        for col, layer in enumerate(layers):
            ax = axes[row][col]
            if layer not in trained.per_method[method]:
                ax.axis("off")
                continue
            ax.hist(trained.per_method[method][layer]["auc"], bins=bins, alpha=0.6, density=True, label="trained")
            for kind, networks in nulls.items():
                values = [v for n in networks for v in n.per_method[method][layer]["auc"]]
                ax.hist(values, bins=bins, histtype="step", density=True, label=kind)
            ax.set_title(f"{method} {layer}", fontsize=9)
            ax.set_xlabel("held-out AUC", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def write_evaluate(result: EvaluateResult, paths: Mapping[str, Path]) -> None:
    """paths["evaluation"]: a folder of one CSV per method and the figure; paths["evaluation_metrics"]."""
    from netunits.plots import close, save_figure
    folder = Path(paths["evaluation"])
    outputs = [folder / f"{method}.csv" for method in result.tables] + [folder / "auc_vs_null.png"]
    remove_stale_temps(*outputs, paths["evaluation_metrics"])
    for rows, path in zip(result.tables.values(), outputs):
        write_csv(rows, path)
    save_figure(result.figure, outputs[-1], FIGURE_DPI)
    close(result.figure)
    write_json(result.metrics, paths["evaluation_metrics"])
    for stale in sorted(folder.iterdir()):
        if stale not in outputs and not stale.name.startswith("."):
            stale.unlink()
