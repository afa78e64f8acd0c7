"""`python -m bench.scale`: what dissecting an ImageNet-sized network on a Broden-sized probe costs.

Broden cannot be had here, so the probes are SYNTHETIC ones of its shape (bench.synthetic_broden:
224 px images, 112 px masks, 6 pixel-level concepts per image, 20% of the categories left
unannotated), one folder per concept count, of which the first N images make the N-image probe.
The networks are torchvision's ResNet18 and ResNet50 at random initialisation (cost only: what a
unit detects is not asked here). Each measurement runs in its own process, so its peak resident
memory is its own; the first line of each child loads the probe file as the stages do
(memory-mapped).

- dissect: netunits.api.dissect's two passes (thresholds, then IoU counts, histograms and top
  images) over ResNet18's layer2-4 and ResNet50's layer4, timed apart.
- compose: ResNet50's layer4 at length 3, beam 5, the params' connectors and candidates, as the
  stage runs it: the concept masks (kept where present, compose_sparse), one forward pass keeping
  the maps that may fire (in a temporary file), one chunk of 128 units' masks built from them and
  the beam search on --compose-units of those; the per-unit times are multiplied by 2,048.
- soft-WPMI: CLIP-Dissect's scores for 2,048 units x the concepts x the images, on seeded random
  inputs shaped like CLIP's (the CLIP image pass is not counted: one forward of the CLIP model
  per probe image, whatever the network).
- the engine: the dissect stage itself on ResNet18 layer2-4 and the largest probe, in one process
  with compute.threads 2, against compute.engine dask with two workers of one thread and
  dissect.shards 2; and with one worker against compute.threads 1.
- plain: NetDissect-Lite's way of counting (bench.dissect.plain_iou: a loop over units and
  images, one upsampled map against one dense concept mask at a time) against the tally, on a
  few images and units of ResNet50's layer4; both give the same IoU.

A cost model t = a + N (b + c C) is fitted (least squares) to each task's points (N images, C
concepts) and read at Broden's 63,305 images and 1,197 concepts. Results: bench/out/scale.md and
bench/out/scale.json.

Usage: python -m bench.scale [--images 1000,2000,4000] [--concepts 300,1200] [--compose-units 16]
       [--skip engine,plain,...]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

from bench.run import ROOT, STAGE_LINE, measured

OUT = ROOT / "bench" / "out"
PROBES = OUT / "scale-probes"
BRODEN = (63305, 1197)              # Broden's images and concepts
N_UNITS_RN50_LAYER4 = 2048
DISSECT_TASKS = {"resnet18": ["layer2", "layer3", "layer4"], "resnet50": ["layer4"]}
QUANTILE, TOP_IMAGES, BATCH = 0.995, 10, 32
PER_IMAGE, UNANNOTATED, SEED = 6, 0.2, 0
TASKS = ("dissect", "compose", "wpmi", "engine", "plain")


# --------------------------------------------------------------------------------------------
# memory: peak RSS (the kernel's high-water mark) and peak anonymous memory (sampled): the probe
# file is memory-mapped, and its pages are page cache the kernel drops under pressure
# --------------------------------------------------------------------------------------------
class AnonymousPeak:
    """The largest RssAnon of this process, sampled every 20 ms while the with block runs."""

    def __enter__(self):
        self.peak, self.running = 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._read())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._read())
        self.mib = self.peak / 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------
# the probes
# --------------------------------------------------------------------------------------------
def probe_path(n_images: int, n_concepts: int, folder_images: int) -> Path:
    """The probe file of the first n_images of the synthetic folder of folder_images images with
    n_concepts concepts, written (folder and file) on first use."""
    from bench.synthetic_broden import write_synthetic_broden
    from netunits.data.broden import load_broden
    from netunits.files import save_torch
    path = PROBES / f"probe-{n_concepts}c-{n_images}.pt"
    if path.exists():
        return path
    folder = PROBES / f"broden-{n_concepts}c"
    marker = folder / "images.txt"
    if not marker.exists() or int(marker.read_text()) < folder_images:
        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        write_synthetic_broden(folder, folder_images, n_concepts, SEED, PER_IMAGE, UNANNOTATED)
        marker.write_text(str(folder_images))
        print(f"  wrote the synthetic folder of {n_concepts} concepts in {time.perf_counter() - start:.0f} s",
              flush=True)
    save_torch(load_broden(folder, 224, 112, n_images, "bench.scale"), path)
    return path


def model(arch: str) -> torch.nn.Module:
    from netunits.models.registry import build_model
    torch.manual_seed(SEED)
    return build_model(f"torchvision:{arch}", 1000).eval()


# --------------------------------------------------------------------------------------------
# the children: each prints one JSON line
# --------------------------------------------------------------------------------------------
def child_dissect(arch: str, probe_file: str) -> dict:
    from netunits.api.dissect import DissectInputs, count_shard, merge_threshold_shards, threshold_shard
    from netunits.data.probe import load_probe
    from netunits.runtime import Runtime
    with AnonymousPeak() as anonymous:
        probe = load_probe(probe_file)
        inputs = DissectInputs(model(arch), probe, None, "random")
        config = SimpleNamespace(layers=DISSECT_TASKS[arch], quantile=QUANTILE, top_images=TOP_IMAGES,
                                 batch_size=BATCH)
        runtime, shard = Runtime(torch.device("cpu"), "fp32"), (0, len(probe["images"]))
        start = time.perf_counter()
        thresholds = merge_threshold_shards([threshold_shard(inputs, config, runtime, shard)], QUANTILE)
        middle = time.perf_counter()
        count_shard(inputs, config, runtime, thresholds, shard)
        end = time.perf_counter()
    if arch == "resnet50":          # compose reads layer4's thresholds, as the stage reads dissect's
        torch.save(thresholds.thresholds["layer4"], Path(probe_file).with_suffix(".rn50-thresholds.pt"))
    return {"seconds": end - start, "pass1_s": middle - start, "pass2_s": end - middle,
            "anonymous_mib": anonymous.mib, "rss_mib": peak_rss_mib()}


def child_compose(probe_file: str, n_units: int) -> dict:
    """compose as the stage runs it on ResNet50's layer4: the concept masks, one forward pass
    keeping the maps that may fire (spilled to a file), then one chunk of units' masks built from
    them and `n_units` of those searched; the masks and search times per unit are read x 2,048."""
    from netunits.api.compose import UNIT_CHUNK, fired_maps_shard, positions_of_units, search_primitives
    from netunits.data.probe import load_probe
    from netunits.methods.compose_search import search_units
    from netunits.params import load_params
    config = load_params(ROOT / "params.yaml", required=("compose",)).compose
    with AnonymousPeak() as anonymous, tempfile.TemporaryFile() as spill:
        probe = load_probe(probe_file)
        thresholds = torch.load(Path(probe_file).with_suffix(".rn50-thresholds.pt"), weights_only=True)
        grid = 7                                                   # ResNet50's layer4 at 224 px
        size = probe["mask_size"] if config.resolution == "mask" else grid
        start = time.perf_counter()
        primitives = search_primitives(probe, config, size, grid)
        masks_s = time.perf_counter() - start
        run = dict(batch_size=BATCH, device=torch.device("cpu"), precision="fp32", input_spec=None, key="layers")
        start = time.perf_counter()
        fired = fired_maps_shard(model("resnet50"), probe, "layer4", thresholds, run, (0, len(probe["images"])),
                                 spill)
        forward_s = time.perf_counter() - start
        start = time.perf_counter()
        positions = positions_of_units(fired, thresholds, size, primitives.words, range(UNIT_CHUNK))
        unit_masks_s = (time.perf_counter() - start) / UNIT_CHUNK
        firing = [p for p in positions if len(p)][:n_units]
        start = time.perf_counter()
        found = search_units(primitives, firing, connectors=config.connectors, beam=config.beam,
                             max_length=config.max_length, candidates=config.candidates, score=config.score,
                             r=config.imrou_r, penalty=config.length_penalty)
        search_s = time.perf_counter() - start
    per_unit = search_s / max(1, len(firing))
    return {"seconds": masks_s + forward_s + (unit_masks_s + per_unit) * N_UNITS_RN50_LAYER4, "masks_s": masks_s,
            "forward_s": forward_s, "unit_masks_per_unit_s": unit_masks_s, "search_per_unit_s": per_unit,
            "units_searched": len(firing), "resolution": config.resolution,
            "formulas_per_unit": sum(r["evaluated"] for r in found) / max(1, len(found)),
            "fired_maps_mib": fired.maps.nbytes / 2 ** 20,
            "anonymous_mib": anonymous.mib, "rss_mib": peak_rss_mib()}


def child_wpmi(n_images: int, n_concepts: int) -> dict:
    from bench.clip_dissect import random_inputs
    from netunits.methods.clip_dissect import best_concepts, similarity_blocks
    with AnonymousPeak() as anonymous:
        scores, activations = random_inputs(n_images, N_UNITS_RN50_LAYER4, n_concepts)
        start = time.perf_counter()
        best_concepts(similarity_blocks("soft_wpmi", scores, activations), 3)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "anonymous_mib": anonymous.mib, "rss_mib": peak_rss_mib()}


def child_plain(probe_file: str, n_images: int, n_units: int) -> dict:
    """NetDissect-Lite's loop against the tally on the same maps: seconds per (unit, image) pair."""
    from bench.dissect import plain_iou
    from netunits.activations import iterate_activations
    from netunits.data.probe import load_probe, unpack_masks
    from netunits.methods.dissection import IoUTally, unit_masks
    probe = load_probe(probe_file)
    images = probe["images"][:n_images]
    maps = next(iter(iterate_activations(model("resnet50"), images, ["layer4"], n_images, torch.device("cpu"),
                                         "fp32")))[1]["layer4"][:, :n_units].float()
    thresholds = maps.transpose(0, 1).flatten(1).quantile(QUANTILE, dim=1)
    concepts, categories = probe["concepts"], probe["categories"]
    n_pixel = sum(c["level"] == "pixel" for c in concepts)
    category = [categories.index(c["category"]) for c in concepts]
    packed, labels, annotated = probe["pixel_masks"][:n_images], probe["image_labels"][:n_images], \
        probe["annotated"][:n_images]
    start = time.perf_counter()
    tally = IoUTally(n_units, n_pixel, len(concepts) - n_pixel, category, len(categories))
    tally.update_packed(unit_masks(maps, thresholds, probe["mask_size"]), packed, labels, annotated)
    ours = tally.iou()
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    plain = plain_iou(maps, thresholds, unpack_masks(packed, probe["mask_size"]).numpy(),
                      labels.numpy(), annotated.numpy(), np.array(category), probe["mask_size"])
    plain_s = time.perf_counter() - start
    return {"tally_s": ours_s, "plain_s": plain_s, "pairs": n_images * n_units, "concepts": len(concepts),
            "same": bool(np.allclose(ours.numpy(), plain))}


# --------------------------------------------------------------------------------------------
# the engine: the dissect stage in a scratch folder
# --------------------------------------------------------------------------------------------
def engine_runs(probe_file: Path) -> dict:
    from netunits.files import save_torch
    from netunits.models.inputs import input_spec
    folder = Path(tempfile.mkdtemp(prefix="netunits-scale-"))
    try:
        for code in ("stages", "netunits"):
            shutil.copytree(ROOT / code, folder / code, ignore=shutil.ignore_patterns("__pycache__"))
        (folder / "data/probe").mkdir(parents=True)
        os.symlink(probe_file, folder / "data/probe/probe.pt")
        save_torch({"arch": "torchvision:resnet18", "n_classes": 1000, "in_channels": 3, "input": input_spec(3, "none"),
                    "image_size": 224, "dataset": "synthetic", "state_dict": model("resnet18").state_dict()},
                   folder / "artifacts/train/model.pt")
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["dissect"].update(layers=DISSECT_TASKS["resnet18"], batch_size=BATCH, quantile=QUANTILE,
                                 top_images=TOP_IMAGES)
        runs = {}
        settings = {"one process, 2 threads": ({"threads": 2, "engine": "none"}, 1),
                    "dask, 2 workers of 1 thread": ({"threads": 1, "engine": "dask", "workers": 2}, 2),
                    "one process, 1 thread": ({"threads": 1, "engine": "none"}, 1),
                    "dask, 1 worker of 1 thread": ({"threads": 1, "engine": "dask", "workers": 1}, 1)}
        for name, (compute, shards) in settings.items():
            params["compute"].update(device="cpu", precision="fp32", scheduler=None, **compute)
            params["dissect"]["shards"] = shards
            (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            wall, rss, out, err = measured([sys.executable, "-m", "stages.dissect"], folder)
            stage = {n: (float(s), int(m)) for n, s, m in STAGE_LINE.findall(out + err)}["dissect"]
            runs[name] = {"wall_s": wall, "stage_s": stage[0], "rss_mib": rss}
            print(f"  engine: {name}: {wall:.1f} s", flush=True)
        return runs
    finally:
        shutil.rmtree(folder)


# --------------------------------------------------------------------------------------------
# the cost model and the report
# --------------------------------------------------------------------------------------------
def fit(points: list[tuple[int, int, float]]) -> np.ndarray:
    """(a, b, c) of t = a + N (b + c C), least squares over (N, C, t) points; c is 0 where every
    point has the same C."""
    n, c, t = (np.array(v, dtype=float) for v in zip(*points))
    columns = [np.ones_like(n), n] + ([n * c] if len(set(c)) > 1 else [])
    coefficients = np.linalg.lstsq(np.stack(columns, 1), t, rcond=None)[0]
    return np.append(coefficients, 0.0) if len(coefficients) == 2 else coefficients


def predict(coefficients: np.ndarray, n_images: int, n_concepts: int) -> float:
    a, b, c = coefficients
    return float(a + n_images * (b + c * n_concepts))


def run_child(*args: str) -> dict:
    _, _, stdout, _ = measured([sys.executable, "-m", "bench.scale", "--child", *args], ROOT)
    return json.loads(stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="1000,2000,4000")
    parser.add_argument("--concepts", default="300,1200")
    parser.add_argument("--compose-units", type=int, default=16)
    parser.add_argument("--skip", default="", help=f"tasks to leave out, of {', '.join(TASKS)}")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        result = {"dissect": lambda: child_dissect(rest[0], rest[1]),
                  "compose": lambda: child_compose(rest[0], int(rest[1])),
                  "wpmi": lambda: child_wpmi(int(rest[0]), int(rest[1])),
                  "plain": lambda: child_plain(rest[0], int(rest[1]), int(rest[2]))}[kind]()
        print(json.dumps(result))
        return
    sizes = sorted(int(v) for v in args.images.split(","))
    concept_counts = sorted(int(v) for v in args.concepts.split(","))
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(TASKS):
        raise SystemExit(f"bench.scale: --skip names {', '.join(sorted(skip - set(TASKS)))}; "
                         f"allowed: {', '.join(TASKS)}")
    PROBES.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows, results = [], {"images": sizes, "concepts": concept_counts}
    for n_concepts in concept_counts:
        for n_images in sizes:
            probe = str(probe_path(n_images, n_concepts, sizes[-1]))
            for task, kind, child_args in (
                    ("dissect resnet18 layer2-4", "dissect", ("resnet18", probe)),
                    ("dissect resnet50 layer4", "dissect", ("resnet50", probe)),
                    ("compose resnet50 layer4", "compose", (probe, str(args.compose_units))),
                    ("soft-WPMI 2048 units", "wpmi", (str(n_images), str(n_concepts)))):
                if kind in skip or (kind == "compose" and "dissect" in skip):     # compose reads dissect's thresholds
                    continue
                result = run_child(kind, *child_args)
                rows.append({"task": task, "images": n_images, "concepts": n_concepts, **result})
                print(f"  {task}, {n_images} images, {n_concepts} concepts: {result['seconds']:.1f} s, "
                      f"anonymous {result['anonymous_mib']:.0f} MiB, RSS {result['rss_mib']:.0f} MiB", flush=True)
    results["rows"] = rows
    models = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        points = [(r["images"], r["concepts"], r["seconds"]) for r in rows if r["task"] == task]
        coefficients = fit(points)
        models[task] = {"a_s": coefficients[0], "per_image_s": coefficients[1], "per_image_concept_s": coefficients[2],
                        "broden_s": predict(coefficients, *BRODEN),
                        "peak_anonymous_mib": max(r["anonymous_mib"] for r in rows if r["task"] == task),
                        "peak_rss_mib": max(r["rss_mib"] for r in rows if r["task"] == task)}
    results["models"] = models
    if "engine" not in skip:
        # the largest probe: the cluster's start and each worker's loading are a fixed cost, which the
        # overhead target weighs against a run of some length
        results["engine"] = engine_runs(probe_path(sizes[-1], concept_counts[0], sizes[-1]))
        results["engine_images"] = sizes[-1]
    if "plain" not in skip:
        results["plain"] = run_child("plain", str(probe_path(sizes[0], concept_counts[-1], sizes[-1])), "4", "64")
    (OUT / "scale.json").write_text(json.dumps(results, indent=1))
    (OUT / "scale.md").write_text(report(results))
    print(report(results))


def report(results: dict) -> str:
    lines = [f"Synthetic Broden-format probes: {results['images']} images x {results['concepts']} concepts, "
             f"224 px images, 112 px masks; random-init torchvision ResNets; fp32 on the cpu, "
             f"{torch.get_num_threads()} threads.", "",
             "| task | images | concepts | s | peak anonymous MiB | peak RSS MiB |", "|---|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['task']} | {r['images']} | {r['concepts']} | {r['seconds']:.1f} | "
                     f"{r['anonymous_mib']:.0f} | {r['rss_mib']:.0f} |")
    lines += ["", f"Cost model t = a + N (b + c C), read at {BRODEN[0]:,} images x {BRODEN[1]:,} concepts:", "",
              "| task | a s | b ms per image | c us per image and concept | Broden, h |", "|---|---:|---:|---:|---:|"]
    for task, m in results["models"].items():
        lines.append(f"| {task} | {m['a_s']:.1f} | {m['per_image_s'] * 1e3:.1f} | {m['per_image_concept_s'] * 1e6:.2f} "
                     f"| {m['broden_s'] / 3600:.2f} |")
    for r in results["rows"]:
        if r["task"].startswith("dissect"):
            lines.append(f"- {r['task']}, {r['images']} x {r['concepts']}: pass 1 (forward, thresholds) "
                         f"{r['pass1_s']:.1f} s, pass 2 (forward, IoU counts) {r['pass2_s']:.1f} s")
        if r["task"].startswith("compose"):
            lines.append(f"- {r['task']}, {r['images']} x {r['concepts']}: concept masks {r['masks_s']:.1f} s, "
                         f"forward {r['forward_s']:.1f} s (fired maps {r['fired_maps_mib']:.0f} MiB, on disk), "
                         f"unit masks {r['unit_masks_per_unit_s'] * 1e3:.1f} ms and search "
                         f"{r['search_per_unit_s']:.3f} s per unit ({r['formulas_per_unit']:.0f} formulas; "
                         f"{r['units_searched']} units searched, resolution {r['resolution']})")
    if "engine" in results:
        e = results["engine"]
        base, two = e["one process, 2 threads"]["stage_s"], e["dask, 2 workers of 1 thread"]["stage_s"]
        one, single = e["one process, 1 thread"]["stage_s"], e["dask, 1 worker of 1 thread"]["stage_s"]
        lines += ["", f"The dissect stage (ResNet18 layer2-4, {results.get('engine_images', '?')} images, "
                      f"{results['concepts'][0]} concepts), stage seconds:", "",
                  "| run | stage s | wall s with process start | peak RSS MiB (largest process) |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {name} | {r['stage_s']:.1f} | {r['wall_s']:.1f} | {r['rss_mib']:.0f} |" for name, r in e.items()]
        lines += ["", f"Engine overhead: 2 workers against one process of 2 threads {two / base - 1:+.1%}; "
                      f"1 worker against one process of 1 thread {single / one - 1:+.1%}."]
    if "plain" in results:
        p = results["plain"]
        lines += ["", f"NetDissect-Lite's loop against the tally, ResNet50 layer4, {p['pairs']} (unit, image) pairs x "
                      f"{p['concepts']} concepts: {p['plain_s']:.1f} s against {p['tally_s']:.2f} s, "
                      f"{p['plain_s'] / p['tally_s']:.0f}x; same IoU: {p['same']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
