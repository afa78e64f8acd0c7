"""Stage extract_features: one value per unit and image (the spatial mean) at each layer of
extract_features.layers (default avgpool, ResNet's pooled features), for the training and the
test subsets, by forward hooks in eval mode.

Reads params `extract_features`, artifacts/train/model.pt and data/prepared/{train,test}.pt;
writes artifacts/features/{train,test}.pt, each a dict with features ({layer: fp32 N x units}),
logits (the model's own fp32 output), labels, indices, clean_labels where the labels carry
noise, and the sha256 of the checkpoint they came from (rof_sweep refuses features that do not
match the checkpoint it is given).
"""
import torch

from netunits.activations import pooled_features
from netunits.data.prepared import load_prepared
from netunits.errors import PipelineError
from netunits.files import remove_stale_temps, save_torch
from netunits.models.registry import load_checkpoint
from netunits.models.registry import get_architecture
from netunits.runtime import check_fits, resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "extract_features", "compute")
    params, source = config.extract_features, config.source
    paths = stage_paths("extract_features", args.run_dir)
    checkpoint_path = paths["model"]
    outputs = {"train": paths["train_features"], "test": paths["test_features"]}
    out_dir = paths["train_features"].parent
    remove_stale_temps(*outputs.values())
    runtime = resolve_compute(config.compute, analysis=False, source=source)
    device, precision = runtime.device, runtime.precision
    model, checkpoint = load_checkpoint(checkpoint_path)
    # channels_last weights, as training evaluates with: the checkpoint stores contiguous ones,
    # which the matrix-product convolutions would copy into their layout for every batch. In
    # bf16 the features keep every bit (tested); in fp32 oneDNN picks other kernels.
    model.to(device, memory_format=torch.channels_last)
    subsets = {"train": load_prepared(paths["train_set"]), "test": load_prepared(paths["test_set"])}
    layers, spec = params.layers, checkpoint["input"]
    for split, subset in subsets.items():
        if subset["image_size"] != checkpoint["image_size"]:
            raise PipelineError(f"{paths[split + '_set']}: images are {subset['image_size']} "
                                f"px but {checkpoint_path} was trained on {checkpoint['image_size']} px; "
                                f"rerun `dvc repro`")
    # one image through the hooks: the units per layer, for the size check, and a bad layer name
    # fails here, before anything is written
    probe, _ = pooled_features(model, subsets["test"]["images"][:1], layers, 1, device, precision, spec,
                               source=source)
    pooled = get_architecture(checkpoint["arch"]).pooled_layer
    if pooled not in params.layers:
        raise PipelineError(f"{source}: 'extract_features.layers' is {params.layers!r}; it must include {pooled}, "
                            f"the layer whose units ROF and the influential filters read (the final layer's input)")
    n_samples = sum(len(s["labels"]) for s in subsets.values())
    n_values = sum(f.shape[1] for f in probe.values()) + checkpoint["n_classes"]
    check_fits(n_samples * n_values * 4, out_dir, "the features")
    for split, path in outputs.items():
        subset = subsets[split]
        features, logits = pooled_features(model, subset["images"], layers, params.batch_size, device,
                                           precision, spec, split)
        accuracy = float((logits.argmax(1) == subset["labels"]).double().mean())
        extra = {"clean_labels": subset["clean_labels"]} if "clean_labels" in subset else {}
        save_torch({"features": features, "logits": logits, "labels": subset["labels"],
                    "indices": subset["indices"], **extra, "checkpoint_sha256": checkpoint["sha256"],
                    "precision": precision}, path)
        shapes = ", ".join(f"{name} {tuple(f.shape)}" for name, f in features.items())
        print(f"{split}: features {shapes} ({precision}), model accuracy {accuracy:.4f}")


if __name__ == "__main__":
    run_stage(main)
