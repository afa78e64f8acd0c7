"""Networks side by side on one probe set (stage compare_models): the pipeline's trained network,
the same training with other seeds (compare.train_seeds), with label noise (compare.label_noise),
and the architecture at random initialisation, dissected with the same code and split.

Per network and layer of dissect.layers, on evaluate's class-balanced split of the probe: each
unit's concept of best IoU on the fit part (network dissection, dissect's quantile threshold from
the network's own activations over the whole probe), the units at dissect.iou_threshold
(detectors) and their distinct concepts ("unique concepts per layer", as network dissection
compares networks), and each answer's held-out AUC with its Mann-Whitney p-value; Benjamini-
Hochberg at evaluate.fdr over a layer's units gives the significant answers and their distinct
concepts. The answer was chosen on other images, so the held-out p-value needs no correction for
the choice among concepts.

Units of different trainings do not correspond, so what can hold across seeds is a statement
about a layer: how many units, and which concepts, are significant in every seed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from netunits.api.ablate import heldout_split
from netunits.api.clip_dissect import probe_coverage
from netunits.api.dissect import unit_thresholds
from netunits.api.evaluate import Settings, presence, scan
from netunits.api.train import TrainInputs, run_train
from netunits.data.prepared import load_prepared
from netunits.data.probe import load_probe
from netunits.data.subsets import corrupt_labels
from netunits.errors import PipelineError
from netunits.files import read_json, remove_stale_temps, write_csv, write_json
from netunits.methods.dissection import best_concepts
from netunits.methods.stats import benjamini_hochberg, empirical_p, mann_whitney
from netunits.models.registry import build_model, load_checkpoint
from netunits.params import PARAMS_FILE
from netunits.runtime import Runtime


@dataclass
class CompareInputs:
    model: torch.nn.Module
    checkpoint: Mapping[str, Any]
    train: dict
    test: dict
    probe: Mapping[str, Any]
    test_accuracy: float              # the pipeline's trained network's (train.json)


@dataclass
class CompareResult:
    rows: list[dict]                  # one per network and layer
    metrics: dict
    figure: Any
    seconds: dict[str, float]

    def summary(self) -> str:
        lines = [f"{r['network']} {r['layer']}: {r['significant']} of {r['units']} answers significant "
                 f"({r['significant_concepts']} concepts), {r['beats_random']} beat the random network, "
                 f"{r['detectors']} detectors "
                 f"({r['detector_concepts']} concepts), mean held-out AUC {r['mean_heldout_auc']:.3f}"
                 for r in self.rows]
        for layer, entry in self.metrics["seeds"]["layers"].items():
            lines.append(f"{layer} over {len(self.metrics['seeds']['networks'])} seeds: significant "
                         f"{entry['significant_mean']:.1f} +- {entry['significant_sd']:.1f} units; concepts "
                         f"significant in every seed: {', '.join(entry['stable_significant_concepts']) or 'none'}; "
                         f"beating the random network in every seed: "
                         f"{', '.join(entry['stable_beats_random_concepts']) or 'none'}")
        lines.append("wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        return "\n".join(lines)


def load_compare_inputs(paths: Mapping[str, Path]) -> CompareInputs:
    model, checkpoint = load_checkpoint(paths["model"])
    probe = load_probe(paths["probe"])
    if probe["images"].shape[-1] != checkpoint["image_size"]:
        raise PipelineError(f"{paths['probe']}: images are {probe['images'].shape[-1]} px but the model was "
                            f"trained on {checkpoint['image_size']} px; rerun `dvc repro probe_concepts`")
    metrics = read_json(paths["train_metrics"])
    return CompareInputs(model, checkpoint, load_prepared(paths["train_set"]), load_prepared(paths["test_set"]),
                         probe, float(metrics["baseline_accuracy"]))


def dissect_network(model: torch.nn.Module, input_spec: Any, probe: Mapping[str, Any], fit: torch.Tensor,
                    held: torch.Tensor, settings: Settings, runtime: Runtime, desc: str,
                    source: str = PARAMS_FILE) -> dict[str, dict]:
    """Per layer: each unit's best concept on the fit part, its fit IoU, and its held-out AUC and
    Mann-Whitney p-value (the unit's spatial maximum per image against the concept's presence)."""
    dissect = settings.dissect
    model = model.eval().to(runtime.device, memory_format=torch.channels_last)
    run = dict(model=model, batch_size=settings.evaluate.batch_size, device=runtime.device,
               precision=runtime.precision, input_spec=input_spec, key="dissect.layers", source=source)
    thresholds = unit_thresholds(run, probe["images"], list(dissect.layers), dissect.quantile, source)[1]
    only_dissection = replace(settings, compose=settings.compose.model_copy(update={"layers": []}))
    found = scan(model, input_spec, probe, thresholds, fit, held, only_dissection, runtime, {}, desc, source)
    present = presence(probe, probe_coverage(probe), settings.evaluate.min_coverage)
    names = [c["name"] for c in probe["concepts"]]
    layers = {}
    for layer in dissect.layers:
        values, chosen = best_concepts(found["tallies"]["fit"][layer].iou(), 1)
        auc, p = mann_whitney(found["peaks"][layer][held], present[held])
        index = chosen.view(-1, 1)
        layers[layer] = {"answer": [names[int(i)] for i in chosen[:, 0]], "fit_iou": values[:, 0],
                         "auc": auc.gather(1, index).flatten(), "p": p.gather(1, index).flatten()}
    return layers


def layer_row(network: str, layer: str, found: Mapping[str, Any], settings: Settings) -> dict:
    significant, _ = benjamini_hochberg(found["p"], settings.evaluate.fdr)
    detector = found["fit_iou"] >= settings.dissect.iou_threshold
    answers = found["answer"]
    return {"network": network, "layer": layer, "units": len(answers),
            "detectors": int(detector.sum()),
            "detector_concepts": len({a for a, d in zip(answers, detector.tolist()) if d}),
            "significant": int(significant.sum()),
            "significant_concepts": len({a for a, s in zip(answers, significant.tolist()) if s}),
            "mean_fit_iou": float(found["fit_iou"].mean()), "mean_heldout_auc": float(found["auc"].mean()),
            "_significant_set": sorted({a for a, s in zip(answers, significant.tolist()) if s}),
            "_detector_set": sorted({a for a, d in zip(answers, detector.tolist()) if d})}


def run_compare_models(inputs: CompareInputs, config: Any, train_config: Any, data: Any, settings: Settings,
                       train_runtime: Runtime, runtime: Runtime, source: str = PARAMS_FILE) -> CompareResult:
    """config: the compare section; train_config: the train section (each network's training but
    its seed); data: the data section (its label_noise and seed: the seeds' networks train on the
    prepared labels as they are, the label-noise networks on the clean labels with data.seed's noise)."""
    probe, checkpoint = inputs.probe, inputs.checkpoint
    fit, held = heldout_split(probe, settings.evaluate, source)
    clean = inputs.train.get("clean_labels", inputs.train["labels"])
    # (name, group, train seed or None for random weights, label noise)
    networks: list[tuple[str, str, int | None, float]] = [
        (f"trained seed {seed}", "seeds", seed, float(data.label_noise))
        for seed in [train_config.seed] + [s for s in config.train_seeds if s != train_config.seed]]
    networks += [(f"label noise {noise}", "label_noise", train_config.seed, float(noise))
                 for noise in config.label_noise]
    networks += [(f"random init {config.random_init_seed}", "random_init", None, 0.0)]
    rows, seconds, accuracy, sets, found_by = [], {}, {}, {}, {}
    for index, (name, group, seed, noise) in enumerate(networks):
        started = time.perf_counter()
        if index == 0:
            model, accuracy[name] = inputs.model, inputs.test_accuracy
        elif seed is None:
            torch.manual_seed(config.random_init_seed)
            model = build_model(checkpoint["arch"], checkpoint["n_classes"])
            accuracy[name] = None
        else:
            train = dict(inputs.train)
            if group == "label_noise":
                train["labels"], _ = corrupt_labels(clean, noise, data.seed, inputs.train["n_classes"])
            trained = run_train(TrainInputs(train, inputs.test), train_config.model_copy(update={"seed": seed}),
                                train_runtime, source)
            model, accuracy[name] = trained.model, trained.metrics["baseline_accuracy"]
        found = dissect_network(model, checkpoint["input"], probe, fit, held, settings, runtime, name, source)
        found_by[name] = found
        for layer, layer_found in found.items():
            row = layer_row(name, layer, layer_found, settings)
            row.update(group=group, label_noise=noise, test_accuracy=accuracy[name])
            sets[(name, layer)] = (row.pop("_significant_set"), row.pop("_detector_set"))
            rows.append(row)
        seconds[name] = time.perf_counter() - started
    # against the random network: a unit's held-out AUC beside the random network's units' in the
    # same layer (empirical p, Benjamini-Hochberg), as evaluate's random_init null
    random_name = networks[-1][0]
    for row in rows:
        found = found_by[row["network"]][row["layer"]]
        null = found_by[random_name][row["layer"]]["auc"].double()
        beats, _ = benjamini_hochberg(empirical_p(found["auc"].double(), null), settings.evaluate.fdr)
        row["beats_random"] = int(beats.sum())
        row["beats_random_concepts"] = len({a for a, b in zip(found["answer"], beats.tolist()) if b})
        sets[(row["network"], row["layer"])] += (sorted({a for a, b in zip(found["answer"], beats.tolist()) if b}),)
    seed_names = [name for name, group, *_ in networks if group == "seeds"]
    seeds: dict[str, Any] = {"networks": seed_names, "layers": {}}
    for layer in settings.dissect.layers:
        counts = [r["significant"] for r in rows if r["layer"] == layer and r["network"] in seed_names]
        detectors = [r["detectors"] for r in rows if r["layer"] == layer and r["network"] in seed_names]
        stable = set.intersection(*(set(sets[(n, layer)][0]) for n in seed_names))
        stable_detectors = set.intersection(*(set(sets[(n, layer)][1]) for n in seed_names))
        stable_beating = set.intersection(*(set(sets[(n, layer)][2]) for n in seed_names))
        beating = [r["beats_random"] for r in rows if r["layer"] == layer and r["network"] in seed_names]
        seeds["layers"][layer] = {
            "significant": counts, "significant_mean": float(np.mean(counts)), "significant_sd": float(np.std(counts)),
            "detectors": detectors, "stable_significant_concepts": sorted(stable),
            "beats_random": beating, "stable_beats_random_concepts": sorted(stable_beating),
            "stable_detector_concepts": sorted(stable_detectors)}
    per_network = ("network", "layer", "group", "label_noise", "test_accuracy")
    metrics = {"checkpoint_sha256": checkpoint["sha256"], "fdr": settings.evaluate.fdr,
               "iou_threshold": settings.dissect.iou_threshold,
               "split": {"fit": len(fit), "heldout": len(held)},
               "networks": {name: {"group": group, "label_noise": noise, "test_accuracy": accuracy[name],
                                   "layers": {r["layer"]: {k: v for k, v in r.items() if k not in per_network}
                                              for r in rows if r["network"] == name}}
                            for name, group, _, noise in networks},
               "seeds": seeds}
    return CompareResult(rows, metrics, comparison_figure(rows, list(settings.dissect.layers)), seconds)


def comparison_figure(rows: list[dict], layers: list[str]):
    """Per layer, grouped bars per network: distinct concepts of the significant answers, the mean
    held-out AUC of the answers, distinct concepts of detectors; how many answers beat the random
    network's units is written under the middle panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    networks = list(dict.fromkeys(r["network"] for r in rows))
    value = {(r["network"], r["layer"]): r for r in rows}
    panels = (("significant_concepts", "distinct concepts of significant answers\n(held-out Mann-Whitney, BH)",
               "concepts"),
              ("mean_heldout_auc", "mean held-out AUC of the answers", "AUC"),
              ("detector_concepts", "distinct concepts of detectors\n(fit IoU at the threshold)", "concepts"))
    figure, axes = plt.subplots(1, len(panels), figsize=(13, 4.2))
    width = 0.8 / len(networks)
    for ax, (key, title, unit) in zip(axes, panels):
        for i, network in enumerate(networks):
            heights = [value[(network, layer)][key] for layer in layers]
            ax.bar(np.arange(len(layers)) + (i - (len(networks) - 1) / 2) * width, heights, width, label=network)
        ax.set_xticks(np.arange(len(layers)), layers)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(unit)
    axes[1].set_ylim(0.5, 1.0)                                   # 0.5: chance
    beating = {network: sum(value[(network, layer)]["beats_random"] for layer in layers) for network in networks[:-1]}
    axes[1].set_xlabel("answers beating the random network's units (empirical p, BH): "
                       + ", ".join(f"{network} {count}" for network, count in beating.items()), fontsize=7)
    if not any(value[(network, layer)]["detector_concepts"] for network in networks for layer in layers):
        axes[2].text(0.5, 0.5, "no detector in any network", ha="center", va="center", transform=axes[2].transAxes)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(networks), fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


def write_compare_models(result: CompareResult, paths: Mapping[str, Path], dpi: int) -> None:
    from netunits.plots import close, save_figure
    remove_stale_temps(paths["compare_table"], paths["compare_figure"], paths["compare_metrics"])
    write_csv(result.rows, paths["compare_table"])
    save_figure(result.figure, paths["compare_figure"], dpi)
    close(result.figure)
    write_json(result.metrics, paths["compare_metrics"])
