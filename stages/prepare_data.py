"""Stage prepare_data: MNIST train and test subsets as compact uint8 tensors.

Reads params `data`; writes data/prepared/{train,test}.pt, each a dict with
images (uint8 N x 1 x S x S, one grey channel), labels (int64 N), indices (int64 N: positions
in the official split) and image_size.
"""
from pathlib import Path

from stages.common import check_fits, load_params, remove_stale_temps, run_stage, save_torch
from stages.mnist import load_source, resize_uint8, select_indices

OUT_DIR = Path("data/prepared")
RAW_DIR = Path("data/raw")


def prepare_split(images, labels, size, selection, seed, image_size, key):
    indices = select_indices(labels, size, selection, seed, key)
    return {"images": resize_uint8(images[indices], image_size), "labels": labels[indices].clone(),
            "indices": indices, "image_size": image_size}


def main():
    params = load_params("data")
    sizes = {"train": params["train_size"], "test": params["test_size"]}
    outputs = {name: OUT_DIR / f"{name}.pt" for name in sizes}
    remove_stale_temps(*outputs.values())
    check_fits(sum(sizes.values()) * params["image_size"] ** 2, OUT_DIR, "the prepared images")
    splits = load_source(params["source"], params["idx_dir"], RAW_DIR)
    prepared = {name: prepare_split(*splits[name], sizes[name], params["selection"], params["seed"],
                                    params["image_size"], f"data.{name}_size")
                for name in sizes}
    for name, subset in prepared.items():
        save_torch(subset, outputs[name])
        counts = subset["labels"].bincount(minlength=10).tolist()
        print(f"{name}: {len(subset['labels'])} images at {params['image_size']} px, per class {counts}")


if __name__ == "__main__":
    run_stage(main)
