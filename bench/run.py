"""`make bench`: the pipeline against a plain implementation of the same recipe, in one run.

Prints (and writes to bench/out/results.md) a table of wall time, peak resident memory and
accuracy with ratios, the ROF sweep against the per-n_units loop, and DVC's rerun times.
Usage: python -m bench.run [--quick] [--fp32] [--repeats N]
  --quick  tiny sizes (a smoke test of the benchmark itself, numbers mean nothing)
  --fp32   also run the pipeline with fp32 precision, to show what bf16 buys
  --repeats N  run plain and pipeline N times each, in ABBA order (plain, pipeline, pipeline,
           plain, ...), and take the ratios of the medians: this machine's speed drifts by 10 to
           20% within minutes, and alternating cancels a steady drift between the two
  --sweep-only  only the ROF sweep measurements (seconds)
  --seeds 1,2  only test accuracy (and wall time) of plain and pipeline for these training
           seeds: one seed's accuracy after 3 epochs swings by points with any change in numerics
  --convs  only ResNet18's convolutions at the default image size and batch: oneDNN against
           netunits/accel/gemm_conv.py's matrix product, forward and backward in bf16 (a minute)
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import torch
import yaml

from netunits.methods.rof import retrieval_curves, retrieval_curves_loop

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
STAGE_LINE = re.compile(r"^(\w+) done in ([\d.]+) s wall, peak RSS (\d+) MiB$", re.M)


def measured(command, cwd):
    """Run a command in a child; (wall seconds, peak RSS MiB of its process tree's largest member, stdout, stderr)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
               "print('@@', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
               "r.returncode, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=cwd, env=ENV, capture_output=True, text=True)
    *err, last = result.stderr.rstrip().splitlines()
    _, wall, rss_kib, code = last.split()
    if code != "0":
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{result.stdout}\n" + "\n".join(err[-20:]))
    return float(wall), int(rss_kib) / 1024, result.stdout, "\n".join(err)


def stage_in_scratch(stage, inputs, extra=()):
    """`python -m stages.<stage> [extra]` in a scratch folder holding a copy of the project's code,
    params.yaml and the cached `inputs` (files or folders) the stage reads; (wall s, peak RSS MiB,
    stdout, stderr) as `measured` returns them."""
    folder = Path(tempfile.mkdtemp(prefix=f"netunits-{stage}-"))
    try:
        for path in (*inputs, "params.yaml"):
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (ROOT / path).is_dir() else shutil.copy)(ROOT / path, folder / path)
        for code in ("stages", "netunits"):
            shutil.copytree(ROOT / code, folder / code, ignore=shutil.ignore_patterns("__pycache__"))
        return measured(["python", "-m", f"stages.{stage}", *extra], folder)
    finally:
        shutil.rmtree(folder)


def plain_args(params):
    """bench/plain.py's command line for these params: the same sizes, epochs, seed and schedule
    (batch size 128 and lr 0.001 are its fixed recipe)."""
    if (params["train"]["batch_size"], params["train"]["lr"]) != (128, 0.001):
        raise SystemExit("bench: the plain implementation trains at batch 128 and lr 0.001; "
                         "set train.batch_size and train.lr to those to compare")
    return [str(params["data"][k]) for k in ("train_size", "test_size", "image_size")] + \
        [str(params["train"][k]) for k in ("epochs", "seed", "lr_schedule")]


def make_repo(params):
    from tests.conftest import scratch_repo  # the test suite's scratch git + DVC repository
    return scratch_repo(Path(tempfile.mkdtemp(prefix="netunits-bench-")), params)


# What plain does too: the ROF chain (the other methods' stages are benchmarked on their own,
# e.g. bench/dissect.py).
ROF_TARGET = "plot"


def run_pipeline(params):
    repo = make_repo(params)
    wall, _, out, err = measured([str(BIN / "dvc"), "repro", ROF_TARGET], repo)
    stages = {name: (float(s), int(m)) for name, s, m in STAGE_LINE.findall(out + err)}
    metrics = json.loads((repo / "artifacts/metrics/train.json").read_text())
    return repo, wall, stages, metrics["baseline_accuracy"]


def abba_order(repeats):
    """Which run comes when: plain, pipeline, then pipeline, plain, and so on."""
    if repeats < 1:
        raise SystemExit(f"bench: --repeats is {repeats}; it must be at least 1")
    return [kind for i in range(repeats) for kind in (("plain", "pipeline") if i % 2 == 0 else ("pipeline", "plain"))]


def run_lines(runs):
    """The table of every run, the ratios of the medians, the per-pair wall ratios and the
    pipeline's stages (medians over its runs; peak RSS the largest)."""
    plain, pipeline = runs["plain"], runs["pipeline"]
    lines = ["| run | wall s | peak RSS MiB | test accuracy |", "|---|---:|---:|---:|"]
    for i, (p, q) in enumerate(zip(plain, pipeline)):
        pair = [("plain (fp32, NCHW, float32 images, loop sweep)", p, ""),
                ("pipeline `dvc repro plot` from scratch", q, " (largest stage)")]
        for name, run, note in (pair if i % 2 == 0 else pair[::-1]):
            lines.append(f"| {name} | {run['wall']:.1f} | {run['rss']:.0f}{note} | {run['test_accuracy']:.4f} |")
    wall_ratio = median([r["wall"] for r in pipeline]) / median([r["wall"] for r in plain])
    rss_ratio = max(r["rss"] for r in pipeline) / median([r["rss"] for r in plain])
    accuracy_gap = pipeline[-1]["test_accuracy"] - plain[-1]["test_accuracy"]
    label = "ratio pipeline / plain" + (" (medians; memory: largest pipeline peak)" if len(plain) > 1 else "")
    lines += [f"| {label} | {wall_ratio:.2f} | {rss_ratio:.2f} | {accuracy_gap * 100:+.1f} points |", ""]
    if len(plain) > 1:
        lines += ["Wall time ratio per pair (in run order): " +
                  ", ".join(f"{q['wall'] / p['wall']:.2f}" for p, q in zip(plain, pipeline)) +
                  "; test accuracy the same in every repeat: " +
                  str(len({r["test_accuracy"] for r in plain}) == 1
                      and len({r["test_accuracy"] for r in pipeline}) == 1),
                  ""]
    parts = {k: median([r[k] for r in plain]) for k in plain[0] if k.endswith("_s")}
    lines += ["Plain run's parts (s): " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in parts.items()),
              "", "| stage | wall s | peak RSS MiB |", "|---|---:|---:|"]
    for name in pipeline[0]["stages"]:
        lines.append(f"| {name} | {median([r['stages'][name][0] for r in pipeline]):.1f} | "
                     f"{max(r['stages'][name][1] for r in pipeline)} |")
    return lines + [""]


def best_of(repeats, fn):
    """(fastest wall time, last result) over `repeats` calls: the least disturbed measurement."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


SWEEP_REPEATS = 5


def sweep_speed(n_samples, n_units, loop=True, seed=0, repeats=SWEEP_REPEATS):
    """(vectorised s, loop s, whether they agree): the best of `repeats` each, the two alternating.

    Alternating matters: a 0.1 s sweep timed `repeats` times in a row can fall wholly inside one
    of this machine's slow spells (best of three back to back once gave 0.16 s, against 0.08 to
    0.13 s otherwise), while the loop's seconds average over them.
    """
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(n_samples, n_units, generator=generator)
    labels = torch.randint(0, 10, (n_samples,), generator=generator)
    weight, bias = torch.randn(10, n_units, generator=generator), torch.randn(10, generator=generator)
    order = torch.randperm(n_units, generator=generator)
    sweep = lambda: retrieval_curves(features, labels, weight, bias, order)   # noqa: E731
    if not loop:
        return best_of(repeats, sweep)[0], None, None
    fast_s = slow_s = math.inf
    for _ in range(repeats):
        seconds, fast = best_of(1, sweep)
        fast_s = min(fast_s, seconds)
        seconds, slow = best_of(1, lambda: retrieval_curves_loop(features, labels, weight, bias, order))
        slow_s = min(slow_s, seconds)
    # the sweep runs in float32, the loop in float64: same accuracies, losses within float32 rounding
    agree = torch.equal(fast[0], slow[0]) and torch.allclose(fast[1], slow[1], rtol=1e-5, atol=1e-5)
    return fast_s, slow_s, agree


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fp32", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sweep-only", action="store_true")
    parser.add_argument("--convs", action="store_true")
    parser.add_argument("--seeds", type=lambda text: [int(v) for v in text.split(",")])
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if args.quick:
        params["data"].update(train_size=300, test_size=200, image_size=32)
        params["train"]["epochs"] = 1
    lines = [f"# Benchmark ({'quick' if args.quick else 'default params'}), torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads", ""]

    if args.sweep_only:
        print("\n".join(lines + sweep_lines(args.quick)))
        return
    if args.seeds:
        print("\n".join(lines + seed_lines(params, args.seeds)))
        return
    if args.convs:
        print("\n".join(lines + conv_lines(params["data"]["image_size"], params["train"]["batch_size"])))
        return
    runs = {"plain": [], "pipeline": []}
    repo = None
    for kind in abba_order(args.repeats):
        if kind == "plain":
            wall_s, rss, out, _ = measured([sys.executable, "-m", "bench.plain", *plain_args(params)], ROOT)
            runs["plain"].append({"wall": wall_s, "rss": rss, **json.loads(out.strip().splitlines()[-1])})
        else:
            if repo is not None:
                shutil.rmtree(repo)
            repo, wall_s, stages, accuracy = run_pipeline(params)
            runs["pipeline"].append({"wall": wall_s, "rss": max(m for _, m in stages.values()),
                                     "test_accuracy": accuracy, "stages": stages})
        print(f"bench: {kind} {runs[kind][-1]['wall']:.1f} s", file=sys.stderr)
    lines += run_lines(runs)
    wall = median([r["wall"] for r in runs["pipeline"]])
    accuracy = runs["pipeline"][-1]["test_accuracy"]
    stages = runs["pipeline"][-1]["stages"]
    if args.fp32:
        fp32 = json.loads(json.dumps(params))
        fp32["compute"]["precision"] = "fp32"
        repo32, wall32, stages32, accuracy32 = run_pipeline(fp32)
        shutil.rmtree(repo32)
        lines += ["| precision | dvc repro wall s | train s | extract_features s | test accuracy |",
                  "|---|---:|---:|---:|---:|",
                  f"| bf16 (auto here) | {wall:.1f} | {stages['train'][0]:.1f} | {stages['extract_features'][0]:.1f} "
                  f"| {accuracy:.4f} |",
                  f"| fp32 | {wall32:.1f} | {stages32['train'][0]:.1f} | {stages32['extract_features'][0]:.1f} | "
                  f"{accuracy32:.4f} |", ""]

    # DVC reruns: a rof param changed, then nothing changed
    with open(repo / "params.yaml") as handle:
        changed = yaml.safe_load(handle)
    changed["rof"]["acc_tolerance"] = changed["rof"]["acc_tolerance"] + 0.005
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    rof_wall, _, _, _ = measured([str(BIN / "dvc"), "repro", ROF_TARGET], repo)
    idle_wall, _, _, _ = measured([str(BIN / "dvc"), "repro", ROF_TARGET], repo)
    lines += [f"`dvc repro` after changing only rof.acc_tolerance: {rof_wall:.1f} s; with nothing changed: "
              f"{idle_wall:.1f} s", ""]
    shutil.rmtree(repo)
    lines += sweep_lines(args.quick)
    text = "\n".join(lines) + "\n"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / ("results-quick.md" if args.quick else "results.md")).write_text(text)
    print(text)


def seed_lines(params, seeds):
    """Plain and pipeline test accuracy per training seed, with the mean and spread."""
    lines = ["| train seed | plain test accuracy | pipeline test accuracy | plain wall s | pipeline wall s |",
             "|---:|---:|---:|---:|---:|"]
    results = []
    for seed in seeds:
        seeded = json.loads(json.dumps(params))
        seeded["train"]["seed"] = seed
        plain_wall, _, plain_out, _ = measured([sys.executable, "-m", "bench.plain", *plain_args(seeded)], ROOT)
        plain = json.loads(plain_out.strip().splitlines()[-1])["test_accuracy"]
        repo, wall, _, accuracy = run_pipeline(seeded)
        shutil.rmtree(repo)
        results.append((plain, accuracy))
        lines.append(f"| {seed} | {plain:.4f} | {accuracy:.4f} | {plain_wall:.1f} | {wall:.1f} |")
    plain_all, pipeline_all = torch.tensor(results, dtype=torch.float64).T
    lines.append(f"| mean +- sd | {plain_all.mean():.4f} +- {plain_all.std() if len(seeds) > 1 else 0:.4f} | "
                 f"{pipeline_all.mean():.4f} +- {pipeline_all.std() if len(seeds) > 1 else 0:.4f} | | |")
    return lines


def conv_lines(image_size, batch_size, repeats=5):
    """Each distinct convolution of ResNet18 at this image size: oneDNN (autocast conv2d) against
    the matrix product, forward + backward in bf16, best of `repeats` with the two interleaved."""
    import torch.nn.functional as F

    from netunits.accel.gemm_conv import gemm_conv2d
    from netunits.models.registry import build_model
    shapes = {}

    def record(m, inputs, output):
        key = (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0], inputs[0].shape[2])
        shapes[key] = (output.shape[2], m.uses_gemm(inputs[0]))     # the model's own dispatch rule
    model = build_model("resnet18", 10).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(record)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.zeros(1, 3, image_size, image_size))
    lines = [f"ResNet18 convolutions at {image_size} px, batch {batch_size}, bf16 forward + backward "
             f"(best of {repeats}):",
             "", "| c_in -> c_out, kernel/stride | input map | output positions | oneDNN ms | matrix product ms | "
             "path taken |", "|---|---:|---:|---:|---:|---|"]
    for (c_in, c_out, kernel, stride, padding, size), (out_size, takes_product) in shapes.items():
        x = torch.randn(batch_size, c_in, size, size).bfloat16().contiguous(memory_format=torch.channels_last)
        weight = torch.randn(c_out, c_in, kernel, kernel).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(size != image_size)   # the first convolution's input is the image: no gradient
        weight.requires_grad_(True)

        # defaults bind this shape's tensors: both functions are timed within this iteration
        def onednn(x=x, weight=weight, stride=stride, padding=padding):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = F.conv2d(x, weight, stride=stride, padding=padding)
            y.backward(torch.ones_like(y))

        def product(x=x, weight=weight, stride=stride, padding=padding):
            y = gemm_conv2d(x, weight.to(torch.bfloat16), stride, padding)
            y.backward(torch.ones_like(y))
        times = {onednn: [], product: []}
        for _ in range(repeats + 1):
            for fn in times:
                start = time.perf_counter()
                fn()
                times[fn].append(time.perf_counter() - start)
        best = {fn: min(t[1:]) * 1000 for fn, t in times.items()}
        lines.append(f"| {c_in} -> {c_out}, {kernel}x{kernel}/{stride} | {size}x{size} | {out_size * out_size} | "
                     f"{best[onednn]:.1f} | {best[product]:.1f} | {'matrix product' if takes_product else 'oneDNN'} |")
    return lines


def sweep_lines(quick):
    """The sweep: one vectorised pass against the per-n_units loop, and a ResNet50-sized layer."""
    lines = []
    n = 300 if quick else 6000
    fast_s, slow_s, agree = sweep_speed(n, 512)
    lines += [f"ROF sweep, {n} samples x 512 units (best of {SWEEP_REPEATS} each, alternating): "
              f"vectorised {fast_s:.2f} s, loop {slow_s:.2f} s, "
              f"speed-up {slow_s / fast_s:.0f}x, equal: {agree}"]
    big = (2000, 2048) if quick else (50000, 2048)
    code = (f"import resource; from bench.run import sweep_speed; "
            f"s = sweep_speed({big[0]}, {big[1]}, loop=False, repeats=1)[0]; "
            f"print(s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
    big_s, big_rss = map(float, out.stdout.split())
    lines += [f"ROF sweep, {big[0]} samples x {big[1]} units (vectorised, chunked): {big_s:.1f} s, "
              f"peak RSS {big_rss:.0f} MiB (the features alone are {big[0] * big[1] * 4 / 2**20:.0f} MiB)"]
    return lines


if __name__ == "__main__":
    main()
