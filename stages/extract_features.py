"""Stage extract_features: the 512-d output of model.avgpool (forward hook, eval mode) for the
training and the test subsets.

Reads params `extract_features`, artifacts/train/model.pt and data/prepared/{train,test}.pt;
writes artifacts/features/{train,test}.pt, each a dict with features (fp32 N x 512), logits
(the model's own fp32 output, N x 10), labels, indices and the sha256 of the checkpoint they
came from (rof_sweep refuses features that do not match the checkpoint it is given).
"""
from pathlib import Path

import torch

from stages.common import (PipelineError, check_fits, choose_device, choose_precision, forward_features,
                           load_checkpoint, load_params, load_prepared, remove_stale_temps, run_stage,
                           save_torch, set_threads)

CHECKPOINT = Path("artifacts/train/model.pt")
OUT_DIR = Path("artifacts/features")


def main():
    params = load_params("extract_features")
    outputs = {name: OUT_DIR / f"{name}.pt" for name in ("train", "test")}
    remove_stale_temps(*outputs.values())
    device = choose_device(params["device"], "extract_features.device")
    precision = choose_precision(params["precision"], device, "extract_features.precision")
    set_threads(params["threads"])
    model, checkpoint = load_checkpoint(CHECKPOINT)
    # channels_last weights, as the train stage evaluates with: the checkpoint stores contiguous ones,
    # which the matrix-product convolutions copied into their layout for every batch. In bf16 the
    # features keep every bit (tested); in fp32 oneDNN picks other kernels (rounding differs).
    model.to(device, memory_format=torch.channels_last)
    subsets = {name: load_prepared(f"data/prepared/{name}.pt") for name in outputs}
    n_samples = sum(len(s["labels"]) for s in subsets.values())
    check_fits(n_samples * (model.fc.in_features + model.fc.out_features) * 4, OUT_DIR, "the features")
    for name, path in outputs.items():
        subset = subsets[name]
        if subset["image_size"] != checkpoint["image_size"]:
            raise PipelineError(f"data/prepared/{name}.pt: images are {subset['image_size']} px but {CHECKPOINT} "
                                f"was trained on {checkpoint['image_size']} px; rerun `dvc repro`")
        features, logits = forward_features(model, subset["images"], params["batch_size"], device, precision, name)
        accuracy = float((logits.argmax(1) == subset["labels"]).double().mean())
        save_torch({"features": features, "logits": logits, "labels": subset["labels"],
                    "indices": subset["indices"], "checkpoint_sha256": checkpoint["sha256"],
                    "precision": precision}, path)
        print(f"{name}: features {tuple(features.shape)} ({precision}), model accuracy {accuracy:.4f}")


if __name__ == "__main__":
    run_stage(main)
