"""Fine-tuning the decomposed network of "Decomposing the Deep": the model whose final layer reads
only each class's k influential units (the influential_filters stage's class sets), trained end
to end with Adam; its test accuracy before and after each epoch against the full network's.

Before training, the decomposed accuracy is the influential_filters stage's number at the same
k exactly: the test features are computed as extract_features computes them (the checkpoint's
model with channels-last weights, extract_features.batch_size, the precision `compute` gives
extract_features) and the logits through influence.decomposed_logits in float64.

From a notebook: `run_finetune_decomposed(FinetuneInputs(model, checkpoint, train, test, sets),
FinetuneParams(...), Runtime(device, "fp32"), eval_batch_size=64)`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from netunits.data.prepared import load_prepared
from netunits.decomposed import check_sets, finetune
from netunits.errors import PipelineError
from netunits.files import read_json, write_csv, write_json
from netunits.models.registry import get_architecture, load_checkpoint
from netunits.params import FinetuneParams
from netunits.runtime import Runtime, seed_everything


@dataclass
class FinetuneInputs:
    model: torch.nn.Module             # on the cpu, eval mode
    checkpoint: dict
    subsets: dict[str, dict]           # "train", "test" -> prepared subsets
    sets: dict[str, list[list[int]]]   # every k of influence.k (as a string) -> one unit list per class


@dataclass
class FinetuneResult:
    curve: list[dict]                  # one row per epoch (0: before training)
    metrics: dict
    seconds: float                     # the fine-tuning's wall time (printed, not written: reruns stay byte-identical)

    def summary(self) -> str:
        m = self.metrics
        return (f"k={m['k']}: decomposed test accuracy {m['accuracy_before']:.4f} before, {m['accuracy_after']:.4f} "
                f"after {m['epochs']} epoch{'' if m['epochs'] == 1 else 's'} on {m['train_images']} images; "
                f"full network {m['accuracy_full']:.4f}; "
                f"{self.seconds:.0f} s fine-tuning and evaluating")


def load_finetune_inputs(paths: dict[str, Path]) -> FinetuneInputs:
    model, checkpoint = load_checkpoint(paths["model"])
    subsets = {split: load_prepared(paths[f"{split}_set"]) for split in ("train", "test")}
    for split, subset in subsets.items():
        if subset["image_size"] != checkpoint["image_size"]:
            raise PipelineError(f"{paths[f'{split}_set']}: images are {subset['image_size']} px but {paths['model']} "
                                f"was trained on {checkpoint['image_size']} px; rerun `dvc repro`")
    data = read_json(paths["influence_sets"])
    layer = get_architecture(checkpoint["arch"]).pooled_layer
    if data.get("layer") != layer or not isinstance(data.get("sets"), dict):
        raise PipelineError(f"{paths['influence_sets']}: not the class sets of {layer}; rerun "
                            f"`dvc repro influential_filters`")
    sets = {k: [entry["units"] for _, entry in sorted(by_class.items(), key=lambda item: int(item[0]))]
            for k, by_class in data["sets"].items()}
    return FinetuneInputs(model, checkpoint, subsets, sets)


def training_subset(train: dict, size: int | str, seed: int) -> dict:
    """The whole training subset, or a seeded random `size` of it (sorted, so the batches are
    drawn from the same images in the same way whatever their order in the file)."""
    if size == "all" or size >= len(train["labels"]):
        return train
    picked = torch.randperm(len(train["labels"]), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return {**train, "images": train["images"][picked], "labels": train["labels"][picked]}


def run_finetune_decomposed(inputs: FinetuneInputs, config: FinetuneParams, runtime: Runtime, eval_batch_size: int,
                            source: str = "params.yaml") -> FinetuneResult:
    """eval_batch_size: extract_features.batch_size (the batches today's decomposed accuracy was
    measured in)."""
    if str(config.k) not in inputs.sets:
        raise PipelineError(f"{source}: 'finetune.k' is {config.k}; it must be one of influence.k whose class sets "
                            f"the influential_filters stage wrote ({', '.join(sorted(inputs.sets, key=int))})")
    model, spec = inputs.model, inputs.checkpoint["input"]
    n_classes, n_units = model.fc.weight.shape
    sets = check_sets(inputs.sets[str(config.k)], n_classes, n_units, "finetune.k")
    train = training_subset(inputs.subsets["train"], config.train_size, config.seed)
    if len(train["labels"]) % config.batch_size == 1:
        # train-mode batch norm cannot normalise a last batch of one image at a 1 x 1 layer
        raise PipelineError(f"{source}: 'finetune.batch_size' is {config.batch_size}, which leaves a last batch of "
                            f"one of the {len(train['labels'])} training images; pick another batch size")
    # the weights' layout extract_features runs with: fp32 convolutions pick their kernels by it
    model.to(runtime.device, memory_format=torch.channels_last)
    seed_everything(config.seed)
    start = time.perf_counter()
    _, history = finetune(model, sets, train, inputs.subsets["test"], epochs=config.epochs,
                          batch_size=config.batch_size, lr=config.lr, seed=config.seed, device=runtime.device,
                          precision=runtime.precision, eval_batch_size=eval_batch_size, input_spec=spec,
                          layer=get_architecture(inputs.checkpoint["arch"]).pooled_layer)
    seconds = time.perf_counter() - start
    full = history[0]["full_accuracy"]
    # the full network is not trained: its accuracy is the reference line of every epoch
    curve = [{"epoch": h["epoch"], "test_accuracy": h["test_accuracy"], "full_accuracy": full,
              "test_loss": h["test_loss"], "train_loss": h.get("train_loss", "")} for h in history]
    metrics = {"k": config.k, "epochs": config.epochs, "lr": config.lr, "batch_size": config.batch_size,
               "train_images": len(train["labels"]), "test_images": len(inputs.subsets["test"]["labels"]),
               "precision": runtime.precision, "accuracy_full": full,
               "accuracy_before": history[0]["test_accuracy"], "accuracy_after": history[-1]["test_accuracy"],
               "loss_before": history[0]["test_loss"], "loss_after": history[-1]["test_loss"]}
    return FinetuneResult(curve, metrics, seconds)


def write_finetune_decomposed(result: FinetuneResult, paths: dict[str, Path]) -> None:
    write_csv(result.curve, paths["finetune_curve"])
    write_json(result.metrics, paths["finetune_metrics"])
