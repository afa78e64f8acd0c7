"""`python -m bench.compose`: compositional explanations' speed and memory against a plain
implementation.

1. The compose stage itself, as `dvc repro` runs it, on the project's cached checkpoint, probe
   set and dissection thresholds: the params.yaml settings (by default every layer4 unit, length
   3, beam 5, OR / AND / AND NOT, 2000 probe images), then the same with every indres option on
   (WITH, CLOSE TO, CLOSE, expanded primitives, imRoU): wall time and peak resident memory.
2. One formula's cost: the beam search on every unit by counts over bit-packed masks
   (netunits.methods.compose_search.search_units), dense and kept only where present
   (compose_sparse, what the stage runs with these connectors: the same formulas), and on
   --units units against a plain beam search that builds each
   formula's dense mask over the whole probe set and scores it (compexp's way, without its
   run-length encoding). Both must find the same formula and score; reported per formula
   scored, and as a ratio.
Needs `dvc repro` (or at least the train, probe_concepts and dissect stages) first.
Usage: python -m bench.compose [--units 2]
"""
import argparse
import time

import torch

from bench.run import ROOT, stage_in_scratch
from netunits.api.compose import unit_positions
from netunits.data.probe import load_probe
from netunits.methods.compose_search import Primitives, search_units
from netunits.methods.compose_sparse import sparse_primitives
from netunits.methods.formula import canonical, formula_length, leaves, to_string
from netunits.methods.formula_masks import concept_masks, evaluate, plain_score
from netunits.models.registry import load_checkpoint
from netunits.params import load_params
from netunits.runtime import choose_precision

INDRES = ["--set", "compose.connectors=[OR, AND, AND NOT, WITH, CLOSE TO, CLOSE]", "--set", "compose.expand=true",
          "--set", "compose.score=imrou", "--set", "compose.length_penalty=0.001"]


def stage_run(extra=()):
    """(wall s, peak RSS MiB, the stage's own line) of `python -m stages.compose` in a scratch folder."""
    wall, rss, _, err = stage_in_scratch("compose", ["artifacts/train/model.pt", "data/probe/probe.pt",
                                                     "artifacts/dissect/tallies.pt"], extra)
    return wall, rss, [line for line in err.splitlines() if "done in" in line][-1]


def plain_search(unit, masks, grid, connectors, beam, max_length, candidates):
    """compexp's beam search on dense masks: every formula's mask built and scored in full."""
    scored = {name: plain_score(unit, mask, 1) for name, mask in masks.items()}
    ranked = sorted(scored, key=lambda name: -scored[name])          # stable: concept order among equals
    pool, evaluated = ranked[:candidates], len(scored)
    current = [(scored[name], name) for name in ranked[:beam]]
    for _ in range(max_length - 1):
        new = []
        for _, formula in current:
            cache = evaluate(formula, masks, grid)
            for name in pool:
                if name in leaves(formula):
                    continue
                for op in connectors:
                    extended = (op, formula, name)
                    mask = cache | masks[name] if op == "OR" else cache & masks[name] if op == "AND" else \
                        cache & ~masks[name] if op == "AND NOT" else evaluate(extended, masks, grid)
                    new.append((plain_score(unit, mask, formula_length(extended)), extended))
                    evaluated += 1
        merged, seen = [], set()
        for entry in current + new:
            if canonical(entry[1]) not in seen:
                seen.add(canonical(entry[1]))
                merged.append(entry)
        merged.sort(key=lambda e: -e[0])
        current = merged[:beam]
    return current[0], evaluated


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2)
    args = parser.parse_args()
    config = load_params(ROOT / "params.yaml", required=("compose", "compute"))
    params = config.compose.model_dump()
    for name, extra in (("params.yaml", ()), ("indres options", INDRES)):
        wall, rss, line = stage_run(extra)
        print(f"compose stage, {name}: {wall:.1f} s wall with process start, peak RSS {rss:.0f} MiB\n  {line}")

    layer = params["layers"][0]
    model, checkpoint = load_checkpoint(ROOT / "artifacts/train/model.pt")
    probe = load_probe(ROOT / "data/probe/probe.pt")
    per_layer = torch.load(ROOT / "artifacts/dissect/tallies.pt", weights_only=False)["per_layer"][layer]
    size, grid = probe["mask_size"], per_layer["top_maps"].shape[-1]
    masks = dict(concept_masks(probe, "mask", size, params["downsample_min"]))
    primitives = Primitives(masks.items(), grid, params["connectors"])
    device = torch.device("cpu")
    precision = choose_precision(config.compute.precision, device, analysis=True)
    run = dict(batch_size=64, device=device, precision=precision, input_spec=checkpoint["input"], key="layers")
    positions = unit_positions(model, probe, layer, per_layer["thresholds"], size, primitives.words, run)
    options = dict(connectors=params["connectors"], beam=params["beam"], max_length=params["max_length"],
                   candidates=params["candidates"])

    start = time.perf_counter()
    everything = search_units(primitives, positions, **options)
    fast_all = time.perf_counter() - start
    start = time.perf_counter()
    sparse = sparse_primitives(probe, "mask", size, params["downsample_min"])
    sparse_found = search_units(sparse, positions, **options)
    sparse_all = time.perf_counter() - start
    units = [u for u in range(len(positions)) if len(positions[u])][:args.units]
    start = time.perf_counter()
    fast = search_units(primitives, [positions[u] for u in units], **options)
    fast_few = time.perf_counter() - start
    start = time.perf_counter()
    plain, plain_evaluated = [], 0
    for u in units:
        unit = torch.zeros(len(probe["images"]) * primitives.words * 64, dtype=torch.bool)
        unit[torch.from_numpy(positions[u])] = True
        unit = unit.view(len(probe["images"]), -1)[:, :size * size].view(-1, size, size)
        (score, formula), evaluated = plain_search(unit, masks, grid, params["connectors"], **{
            k: options[k] for k in ("beam", "max_length", "candidates")})
        plain.append((score, formula))
        plain_evaluated += evaluated
    plain_time = time.perf_counter() - start
    same = all(abs(p[0] - f["score"]) < 1e-9 and canonical(p[1]) == canonical(f["formula"])
               for p, f in zip(plain, fast))
    n_all = sum(r["evaluated"] for r in everything)
    n_few = sum(r["evaluated"] for r in fast)
    print(f"\nbeam search on {layer}, {len(probe['images'])} probe images, masks {size} x {size}, "
          f"{len(primitives.names)} concepts, {', '.join(params['connectors'])}, beam {params['beam']}, "
          f"length {params['max_length']}:")
    print("| implementation | units | formulas scored | s | us per formula |")
    print("|---|---:|---:|---:|---:|")
    print(f"| counts over bit-packed masks | {len(positions)} | {n_all} | {fast_all:.1f} | "
          f"{fast_all / n_all * 1e6:.1f} |")
    print(f"| counts over masks kept where present (the stage's) | {len(positions)} | {n_all} | {sparse_all:.1f} | "
          f"{sparse_all / n_all * 1e6:.1f} |")
    print(f"| counts over bit-packed masks | {len(units)} | {n_few} | {fast_few:.2f} | {fast_few / n_few * 1e6:.1f} |")
    print(f"| plain: dense masks | {len(units)} | {plain_evaluated} | {plain_time:.1f} | "
          f"{plain_time / plain_evaluated * 1e6:.1f} |")
    print(f"ratio per formula, plain / counts (all units): {plain_time / plain_evaluated / (fast_all / n_all):.0f}x; "
          f"plain for all {len(positions)} units would take about "
          f"{plain_time / len(units) * len(positions) / 60:.0f} min; same formulas and scores: {same}")
    print(f"the sparse search's formulas and scores equal the dense search's: {sparse_found == everything}")
    for p, f in zip(plain, fast):
        print(f"  {to_string(f['formula'])} ({f['score']:.4f}) | plain: {to_string(p[1])} ({p[0]:.4f})")


if __name__ == "__main__":
    main()
