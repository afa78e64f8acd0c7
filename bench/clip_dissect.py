"""`python -m bench.clip_dissect`: CLIP-Dissect's speed and memory.

1. The clip_dissect stage itself with the project's params (source annotations: every unit of
   clip_dissect.layers over the whole probe set), on the cached checkpoint, probe set and
   network dissection tables: wall time and peak resident memory.
2. soft-WPMI alone over --units units x --concepts concepts (the reference's largest word list
   has 20,000) and --images probe images, on seeded random inputs shaped like CLIP's (image-text
   cosines around 0.2): the chunked implementation (netunits.methods.clip_dissect, a block of
   concepts at a time) against a plain one, the reference's formulation (similarity.py: softmax
   over every concept, then one unit at a time over every concept, then log P(c) over the whole
   units x concepts matrix). Each runs in its own process, so each peak RSS is its own; both must
   give every unit the same description.
Needs `dvc repro` (or at least train, probe_concepts, dissect and dissect_report) first for part 1.
Usage: python -m bench.clip_dissect [--units 896] [--concepts 20000] [--images 2000] [--skip-stage]
"""
import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.run import ROOT, measured, stage_in_scratch
from netunits.methods.clip_dissect import best_concepts, similarity_blocks, top_images

SEED = 0


def reference_soft_wpmi(clip_feats, target_feats, top_k=100, a=10.0, lam=1.0, min_prob=1e-7, p_start=0.998,
                        p_end=0.97):
    """The reference's soft_wpmi (Trustworthy-ML-Lab/CLIP-dissect, similarity.py) as it is written,
    on the cpu, with one change: the top images come from the same stable sort as the chunked
    implementation (torch.topk orders ties arbitrarily)."""
    with torch.no_grad():
        clip_feats = torch.nn.functional.softmax(a * clip_feats, dim=1)
        inds = top_images(target_feats, top_k)
        prob_d_given_e = []
        p_in_examples = p_start - (torch.arange(start=0, end=top_k) / top_k * (p_start - p_end)).unsqueeze(1)
        for orig_id in range(target_feats.shape[1]):
            curr_clip_feats = clip_feats.gather(0, inds[:, orig_id:orig_id + 1].expand(-1, clip_feats.shape[1]))
            curr_p_d_given_e = 1 + p_in_examples * (curr_clip_feats - 1)
            curr_p_d_given_e = torch.sum(torch.log(curr_p_d_given_e + min_prob), dim=0, keepdim=True)
            prob_d_given_e.append(curr_p_d_given_e)
        prob_d_given_e = torch.cat(prob_d_given_e, dim=0)
        prob_d = torch.logsumexp(prob_d_given_e, dim=0, keepdim=True) - math.log(prob_d_given_e.shape[0])
        return prob_d_given_e - lam * prob_d


def random_inputs(n_images, n_units, n_concepts):
    """(cosines images x concepts, activations images x units), seeded."""
    generator = torch.Generator().manual_seed(SEED)
    scores = torch.randn(n_images, n_concepts, generator=generator).mul_(0.05).add_(0.2)   # in place: no
    activations = torch.randn(n_images, n_units, generator=generator).relu_()            # peak above the inputs
    return scores, activations


def child(kind, n_images, n_units, n_concepts, out):
    """One implementation in this process: prints JSON (seconds, RSS before and at the end)."""
    torch.manual_seed(SEED)
    scores, activations = random_inputs(n_images, n_units, n_concepts)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if kind == "chunked":
        values, indices = best_concepts(similarity_blocks("soft_wpmi", scores, activations), 3)
    else:
        values, indices = reference_soft_wpmi(scores, activations).topk(3, dim=1)
    seconds = time.perf_counter() - start
    torch.save({"values": values, "indices": indices}, out)
    print(json.dumps({"seconds": seconds, "rss_inputs_mib": before,
                      "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def stage_run():
    """(wall s, peak RSS MiB, the stage's last lines) of `python -m stages.clip_dissect` in a scratch folder."""
    wall, rss, out, err = stage_in_scratch("clip_dissect", ["artifacts/train/model.pt", "data/probe/probe.pt",
                                                            "artifacts/dissect/layers"])
    return wall, rss, out.strip().splitlines() + [line for line in err.splitlines() if "done in" in line][-1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=896)
    parser.add_argument("--concepts", type=int, default=20000)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--skip-stage", action="store_true")
    parser.add_argument("--child", choices=["chunked", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images, args.units, args.concepts, args.out)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_stage:
        wall, rss, lines = stage_run()
        print(f"clip_dissect stage (params.yaml): {wall:.1f} s wall with process start, peak RSS {rss:.0f} MiB")
        for line in lines:
            print(f"  {line}")
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        for kind in ("chunked", "plain"):
            out = Path(folder) / f"{kind}.pt"
            command = [sys.executable, "-m", "bench.clip_dissect", "--child", kind, "--out", str(out),
                       "--units", str(args.units), "--concepts", str(args.concepts), "--images", str(args.images)]
            _, _, stdout, _ = measured(command, ROOT)
            results[kind] = {**json.loads(stdout.strip().splitlines()[-1]), **torch.load(out, weights_only=True)}
    chunked, plain = results["chunked"], results["plain"]
    differ = chunked["indices"][:, 0] != plain["indices"][:, 0]
    # where the two disagree, the plain one's best two concepts are within rounding of each other
    gap = float((plain["values"][differ, 0] - plain["values"][differ, 1]).abs().max()) if differ.any() else 0.0
    close = torch.allclose(chunked["values"], plain["values"], rtol=1e-4, atol=1e-3)
    print(f"soft-WPMI, {args.units} units x {args.concepts} concepts x {args.images} images (top_k 100):")
    print("| implementation | seconds | peak RSS MiB | of which above the inputs |")
    print("|---|---:|---:|---:|")
    above = {kind: r["rss_peak_mib"] - r["rss_inputs_mib"] for kind, r in results.items()}
    for kind, r in results.items():
        print(f"| {kind} | {r['seconds']:.1f} | {r['rss_peak_mib']:.0f} | {above[kind]:.0f} |")
    others = f" (the others: the plain one's two best are {gap:.1e} apart)" if differ.any() else ""
    print(f"plain / chunked: time {plain['seconds'] / chunked['seconds']:.2f}x, memory above the inputs "
          f"{above['plain'] / max(1, above['chunked']):.1f}x; same top-3 scores (rtol 1e-4): {close}; "
          f"same description on {int((~differ).sum())} of {len(differ)} units{others}")

if __name__ == "__main__":
    main()
