"""Stage clip_dissect: CLIP-Dissect's open-vocabulary unit descriptions (soft-WPMI by default) for
every layer of clip_dissect.layers, with the concept-image matrix from the probe set's own
annotations or from an open_clip model with local weights.

Reads params clip_dissect, artifacts/train/model.pt, data/probe/probe.pt, the concept file and
weights file the params name, and artifacts/dissect/layers/<layer>.csv (network dissection's
labels, for the agreement); writes artifacts/clip_dissect/layers/<layer>.csv per layer (layer,
unit, description, similarity and the two runner-up concepts), artifacts/clip_dissect/descriptions.csv
(the reference's four columns over every layer), artifacts/metrics/clip_dissect.json and
artifacts/plots/clip_dissect_top.png.
"""
from pathlib import Path

import torch

from netunits.activations import iterate_activations
from netunits.clip_models import image_embeddings, load_model, text_embeddings
from netunits.data.probe import load_probe, unpack_masks
from netunits.errors import PipelineError
from netunits.files import file_sha256, read_csv, remove_stale_temps, write_csv, write_json
from netunits.methods.clip_dissect import (agreement, annotation_scores, best_concepts, chance_agreement,
                                           coverage_reference, parse_concepts, pixel_coverage, similarity_blocks,
                                           unit_summary)
from netunits.models.registry import load_checkpoint
from netunits.plots import close, descriptions_figure, save_figure
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config

FIGURE_TOP = 15         # descriptions per layer in the figure
N_BEST = 3              # the description and two runners-up per unit
MASK_BATCH = 250        # probe images whose masks are unpacked at once (annotations source)


def similarity_constants(params):
    """The similarity's keyword arguments, and the param naming its top_k (None: it reads none)."""
    method = params["similarity"]
    if method == "cos_similarity":
        return {}, None
    constants = {"top_k": params[f"{method}_top_k"], "a": params[f"{method}_a"],
                 "lam": params[f"{method}_lambda"], "min_prob": params["min_prob"]}
    if method == "soft_wpmi":
        constants.update(p_start=params["soft_wpmi_p_start"], p_end=params["soft_wpmi_p_end"])
    return constants, f"clip_dissect.{method}_top_k"


def read_concept_file(path):
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"params.yaml: 'clip_dissect.concepts' is {str(path)!r}; no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a readable UTF-8 text file ({str(exc)[:200]})") from None
    names = parse_concepts(text)
    if not names:
        raise PipelineError(f"{path}: no concepts in the concept file (one per line; blank lines and repeats "
                            f"are ignored)")
    return names


def annotation_matrix(probe, names, quantile):
    """The annotations source's score matrix, probe images x `names` (see annotation_scores)."""
    concepts = probe["concepts"]
    n_pixel = sum(c["level"] == "pixel" for c in concepts)
    category = [probe["categories"].index(c["category"]) for c in concepts]
    annotated = probe["annotated"][:, category]                                 # images x concepts
    coverage = torch.cat([pixel_coverage(unpack_masks(probe["pixel_masks"][start:start + MASK_BATCH],
                                                      probe["mask_size"]))
                          for start in range(0, len(probe["images"]), MASK_BATCH)])
    reference = coverage_reference(coverage, annotated[:, :n_pixel], quantile)
    scores = annotation_scores(coverage, reference, probe["image_labels"], annotated)
    index = {c["name"]: i for i, c in enumerate(concepts)}
    return scores[:, [index[name] for name in names]]


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "clip_dissect", "compute")
    params, source = config.clip_dissect.model_dump(), config.source
    run, layers, method = args.run_dir, params["layers"], params["similarity"]
    out_dir = run / "artifacts/clip_dissect"
    descriptions_path = out_dir / "descriptions.csv"
    metrics_path = run / "artifacts/metrics/clip_dissect.json"
    figure_path = run / "artifacts/plots/clip_dissect_top.png"
    layer_paths = {layer: out_dir / "layers" / f"{layer}.csv" for layer in layers}
    remove_stale_temps(*layer_paths.values(), descriptions_path, metrics_path, figure_path)
    constants, top_k_key = similarity_constants(params)
    runtime = resolve_compute(config.compute, analysis=True, source=source)
    device, precision = runtime.device, runtime.precision

    # every input checked before the forward passes
    probe = load_probe(run / "data/probe/probe.pt")
    n_images = len(probe["images"])
    if top_k_key and constants["top_k"] > n_images:
        raise PipelineError(f"{source}: '{top_k_key}' is {constants['top_k']}; it must be at most the probe "
                            f"set's {n_images} images")
    probe_names = [c["name"] for c in probe["concepts"]]
    names = probe_names if params["concepts"] is None else read_concept_file(params["concepts"])
    if params["source"] == "annotations":
        unknown = [name for name in names if name not in probe_names]
        if unknown:
            raise PipelineError(f"{params['concepts']}: the annotations source scores only the probe set's "
                                f"concepts, and {unknown[0]!r} is not one ({', '.join(probe_names)})")
    else:
        clip, preprocess, tokenizer = load_model(params["model"], params["weights"], device, source=source)
    model, checkpoint = load_checkpoint(run / "artifacts/train/model.pt")
    if probe["images"].shape[-1] != checkpoint["image_size"]:
        raise PipelineError(f"data/probe/probe.pt: images are {probe['images'].shape[-1]} px but the model was "
                            f"trained on {checkpoint['image_size']} px; rerun `dvc repro probe_concepts`")
    # network dissection's labels, where its vocabulary holds every concept scored here
    comparable = set(names) <= set(probe_names)
    dissected = {}
    for layer in layers:
        path = run / "artifacts/dissect/layers" / f"{layer}.csv"
        if comparable and path.exists():
            dissected[layer] = read_csv(path, numeric=False)

    # each unit's value per probe image
    model.to(device, memory_format=torch.channels_last)
    parts = {layer: [] for layer in layers}
    for _, outputs, _ in iterate_activations(model, probe["images"], layers, params["batch_size"], device,
                                             precision, checkpoint["input"], desc="units", key="clip_dissect.layers"):
        for layer, output in outputs.items():
            parts[layer].append(unit_summary(output, params["pool"]))
    summaries = {layer: torch.cat(values) for layer, values in parts.items()}
    for layer, table in dissected.items():
        if len(table["unit"]) != summaries[layer].shape[1]:
            raise PipelineError(f"artifacts/dissect/layers/{layer}.csv: {len(table['unit'])} units, but the model's "
                                f"{layer} has {summaries[layer].shape[1]}; rerun `dvc repro dissect_report`")

    # the concept-image scores: CLIP's cosine, or the annotations
    if params["source"] == "clip":
        images = image_embeddings(clip, preprocess, probe["images"], params["batch_size"], device, precision)
        texts = text_embeddings(clip, tokenizer, names, params["batch_size"], device, precision)
        scores = images @ texts.T
    else:
        scores = annotation_matrix(probe, names, params["annotation_quantile"])

    tables, counts = {}, {}
    metrics = {"source": params["source"], "similarity": method, "pool": params["pool"], "concepts": len(names),
               "concepts_sha256": None if params["concepts"] is None else file_sha256(params["concepts"]),
               "weights_sha256": file_sha256(params["weights"]) if params["source"] == "clip" else None,
               "probe_images": n_images, "layers": {}}
    for layer in layers:
        values, indices = best_concepts(similarity_blocks(method, scores, summaries[layer], **constants), N_BEST)
        rows = []
        for unit in range(len(values)):
            row = {"layer": layer, "unit": unit}
            for rank, prefix in enumerate(("", "second", "third")):
                found = rank < values.shape[1]
                row[prefix or "description"] = names[int(indices[unit, rank])] if found else ""
                row[f"{prefix}_similarity" if prefix else "similarity"] = float(values[unit, rank]) if found else ""
            rows.append(row)
        tables[layer] = rows
        described = [r["description"] for r in rows]
        counts[layer] = {d: described.count(d) for d in dict.fromkeys(described)}
        activations = summaries[layer]
        entry = {"units": len(rows), "unique_descriptions": len(counts[layer]),
                 "constant_units": int((activations.amax(0) == activations.amin(0)).sum()),
                 "agreement_with_dissection": None, "chance_agreement": None, "dissection_detectors": None,
                 "agreement_on_detectors": None}
        if layer in dissected:
            labels, detector = dissected[layer]["concept"], [v == "1" for v in dissected[layer]["detector"]]
            on_detectors = [(d, l) for d, l, is_detector in zip(described, labels, detector) if is_detector]
            entry.update(agreement_with_dissection=agreement(described, labels),
                         chance_agreement=chance_agreement(described, labels),
                         dissection_detectors=len(on_detectors),
                         agreement_on_detectors=agreement(*zip(*on_detectors)) if on_detectors else None)
        metrics["layers"][layer] = entry
    every = [r["description"] for rows in tables.values() for r in rows]
    metrics["overall"] = {"units": len(every), "unique_descriptions": len(set(every)),
                          "agreement_with_dissection": None, "chance_agreement": None}
    if dissected:
        compared = [(r["description"], label) for layer in dissected
                    for r, label in zip(tables[layer], dissected[layer]["concept"])]
        metrics["overall"].update(
            agreement_with_dissection=agreement(*zip(*compared)),
            chance_agreement=sum(metrics["layers"][layer]["chance_agreement"] * len(tables[layer])
                                 for layer in dissected) / len(compared))

    # every check is done: now the outputs
    for layer, rows in tables.items():
        write_csv(rows, layer_paths[layer])
    write_csv([{key: r[key] for key in ("layer", "unit", "description", "similarity")}
               for rows in tables.values() for r in rows], descriptions_path)
    write_json(metrics, metrics_path)
    figure = descriptions_figure(counts, FIGURE_TOP, f"CLIP-Dissect ({params['source']}, {method}, "
                                                     f"{len(names)} concepts): most frequent descriptions")
    save_figure(figure, figure_path, 110)
    close(figure)
    for stale in sorted((out_dir / "layers").glob("*.csv")):     # tables of layers no longer described
        if stale not in layer_paths.values():
            stale.unlink()
    for layer, m in metrics["layers"].items():
        compared = "" if m["agreement_with_dissection"] is None else \
            f", agreement with network dissection {m['agreement_with_dissection']:.3f} " \
            f"(chance {m['chance_agreement']:.3f})"
        print(f"{layer}: {m['units']} units, {m['unique_descriptions']} unique descriptions{compared}")


if __name__ == "__main__":
    run_stage(main)
