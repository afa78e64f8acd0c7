"""Stage prepare_data: a data set's train and test subsets as compact uint8 tensors.

Reads params `data`; writes data/prepared/{train,test}.pt in the prepared format
(netunits/data/prepared.py): images at data.image_size with the data set's own channels,
labels (with data.label_noise of the training labels replaced by wrong ones), indices into
the official split.
"""
from pathlib import Path

from netunits.data.registry import check_request, get_dataset
from netunits.data.subsets import corrupt_labels, resize_uint8, select_indices
from netunits.files import remove_stale_temps, save_torch
from netunits.runtime import check_fits, run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths

RAW_DIR = Path("data/raw")   # where data.source 'torchvision' downloads to (not a DVC output)


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "data")
    params, source = config.data, config.source
    paths = stage_paths("prepare_data", args.run_dir)
    spec = get_dataset(params.dataset, source=source)
    check_request(spec, params, source)
    outputs = {"train": paths["train_set"], "test": paths["test_set"]}
    out_dir = paths["train_set"].parent
    remove_stale_temps(*outputs.values())
    sizes = {split: getattr(params, f"{split}_size") for split in outputs}
    check_fits(sum(sizes.values()) * spec.channels * params.image_size ** 2, out_dir, "the prepared images")
    splits = spec.load(params.source, params.dir, RAW_DIR)
    for split, path in outputs.items():
        images, labels = splits[split]
        indices = select_indices(labels, sizes[split], params.selection, params.seed,
                                 f"data.{split}_size", spec.n_classes, source)
        subset = {"images": resize_uint8(images[indices], params.image_size), "labels": labels[indices].clone(),
                  "indices": indices, "image_size": params.image_size, "dataset": spec.name,
                  "n_classes": spec.n_classes}
        note = ""
        if split == "train" and params.label_noise > 0:
            subset["clean_labels"] = subset["labels"]
            subset["labels"], changed = corrupt_labels(subset["labels"], params.label_noise, params.seed,
                                                       spec.n_classes)
            note = f", {int(changed.sum())} labels replaced by wrong ones"
        save_torch(subset, path)
        counts = subset["labels"].bincount(minlength=spec.n_classes).tolist()
        print(f"{split}: {len(indices)} {spec.name} images at {params.image_size} px, per class {counts}{note}")


if __name__ == "__main__":
    run_stage(main)
