"""Stage study run (study/dvc.yaml): one cell of the generalization grid.

For one label-noise fraction and one seed: take the training and test subsets, replace a
seeded share of the training labels by a random wrong label (test labels stay clean), train,
extract the pooled features, run ROF on both subsets and sort the units into the four roles.
Reads study/params.yaml (section `run`); writes artifacts/study/runs/noise<f>_seed<s>.json.
Usage: python -m stages.study_run --label-noise 0.2 --seed 1
"""
import argparse
from pathlib import Path

import torch

from stages.common import (N_CLASSES, SCHEMA, PipelineError, build_model, choose_device,
                           choose_precision, float_range, forward_features, int_range, list_of, load_params,
                           remove_stale_temps, run_stage, seed_everything, set_threads, write_json)
from stages.mnist import load_packaged
from stages.prepare_data import prepare_split
from stages.rof import CATEGORIES, category_counts
from stages.rof_sweep import DEFINITIONS, METRIC_NAMES, SUBSETS, build_taxonomy, sweep_subset
from stages.train import train_model

PARAMS = Path("study/params.yaml")
RUNS_DIR = Path("artifacts/study/runs")
NOISE = float_range(0, 0.9)  # at 0.9 wrong labels outnumber right ones in every class: nothing to learn
SEEDS = int_range(0, 2**31 - 1)
STUDY_SCHEMA = {
    "grid": {"label_noise": list_of(*NOISE), "seeds": list_of(*SEEDS)},
    "run": {
        "train_size": SCHEMA["data"]["train_size"], "test_size": SCHEMA["data"]["test_size"],
        "selection": SCHEMA["data"]["selection"], "image_size": SCHEMA["data"]["image_size"],
        "epochs": SCHEMA["train"]["epochs"], "batch_size": SCHEMA["train"]["batch_size"],
        "lr": SCHEMA["train"]["lr"], "lr_schedule": SCHEMA["train"]["lr_schedule"],
        "device": SCHEMA["train"]["device"],
        "precision": SCHEMA["train"]["precision"], "threads": SCHEMA["train"]["threads"],
        "eval_batch_size": SCHEMA["train"]["eval_batch_size"],
        "turning_point": SCHEMA["rof"]["turning_point"],
        "acc_tolerance": SCHEMA["rof"]["acc_tolerance"], "loss_tolerance": SCHEMA["rof"]["loss_tolerance"],
    },
}


def run_name(label_noise, seed):
    return f"noise{label_noise}_seed{seed}"


def corrupt_labels(labels, fraction, seed, n_classes=N_CLASSES):
    """Replace round(fraction * N) labels, chosen with a generator seeded by `seed`, by a wrong
    label drawn uniformly from the other n_classes - 1. Returns (noisy labels, changed mask)."""
    generator = torch.Generator().manual_seed(seed)
    n_changed = round(fraction * len(labels))
    changed = torch.zeros(len(labels), dtype=torch.bool)
    changed[torch.randperm(len(labels), generator=generator)[:n_changed]] = True
    offsets = torch.randint(1, n_classes, (len(labels),), generator=generator)
    noisy = torch.where(changed, (labels + offsets) % n_classes, labels)
    return noisy, changed


def accuracy(logits, labels):
    return float((logits.argmax(1) == labels).double().mean())


def run_cell(params, label_noise, seed, splits):
    """Everything for one grid cell; returns the JSON-ready summary."""
    device = choose_device(params["device"], "run.device")
    precision = choose_precision(params["precision"], device, "run.precision")
    subsets = {name: prepare_split(*splits[name], params[f"{name}_size"], params["selection"], seed,
                                   params["image_size"], f"run.{name}_size") for name in SUBSETS}
    clean_train_labels = subsets["train"]["labels"]
    subsets["train"]["labels"], changed = corrupt_labels(clean_train_labels, label_noise, seed)
    seed_everything(seed)
    model = build_model().to(device).to(memory_format=torch.channels_last)
    history = train_model(model, subsets["train"], subsets["test"], epochs=params["epochs"],
                          batch_size=params["batch_size"], lr=params["lr"],
                          lr_schedule=params["lr_schedule"], seed=seed, device=device,
                          precision=precision, eval_batch_size=params["eval_batch_size"])
    state = model.state_dict()
    weight, bias = state["fc.weight"].detach().cpu(), state["fc.bias"].detach().cpu()
    data = {}
    for name in SUBSETS:
        features, logits = forward_features(model, subsets[name]["images"], params["eval_batch_size"], device,
                                            precision, name)
        # ROF on the training subset uses the labels the network was trained on (noisy ones)
        data[name] = {"features": features, "logits": logits, "labels": subsets[name]["labels"]}
    curves = {name: sweep_subset(data[name], weight, bias, seed) for name in SUBSETS}
    points, categories, _, degenerate = build_taxonomy(curves, "l1", params["acc_tolerance"],
                                                       params["loss_tolerance"])
    train_accuracy, test_accuracy = accuracy(data["train"]["logits"], data["train"]["labels"]), \
        accuracy(data["test"]["logits"], data["test"]["labels"])
    return {
        "label_noise": label_noise, "seed": seed, "labels_changed": int(changed.sum()),
        "train_accuracy": train_accuracy,
        "train_accuracy_clean_labels": accuracy(data["train"]["logits"], clean_train_labels),
        "test_accuracy": test_accuracy, "generalization_gap": train_accuracy - test_accuracy,
        "final_train_loss": history[-1]["loss"],
        "n0": {name: points[name] for name in SUBSETS},
        "taxonomy": {d: {m: {**category_counts(categories[(d, m)]), "degenerate": degenerate[(d, m)]}
                         for m in METRIC_NAMES} for d in DEFINITIONS},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-noise", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    params = load_params("run", PARAMS, STUDY_SCHEMA)
    if not NOISE[0](args.label_noise):
        raise PipelineError(f"--label-noise is {args.label_noise}; it must be {NOISE[1]}")
    if not SEEDS[0](args.seed):
        raise PipelineError(f"--seed is {args.seed}; it must be {SEEDS[1]}")
    output = RUNS_DIR / f"{run_name(args.label_noise, args.seed)}.json"
    remove_stale_temps(output)
    set_threads(params["threads"])
    summary = run_cell(params, args.label_noise, args.seed, load_packaged())
    write_json(summary, output)
    chosen = summary["taxonomy"][params["turning_point"]]["acc"]
    print(f"noise {args.label_noise}, seed {args.seed}: train accuracy {summary['train_accuracy']:.4f}, "
          f"test accuracy {summary['test_accuracy']:.4f}, gap {summary['generalization_gap']:+.4f}; "
          + ", ".join(f"{c} {chosen[c]}" for c in CATEGORIES))


if __name__ == "__main__":
    run_stage(main)
