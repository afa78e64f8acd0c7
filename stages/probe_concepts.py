"""Stage probe_concepts: the probe set network dissection compares units with.

probe.source mnist: the first probe.size official MNIST test digits that the ROF test subset
does not use (with data.selection first: those after it), at data.image_size, with the concepts of
netunits/concepts.py computed at probe.mask_size. probe.source broden: the first probe.size
images of a Broden-format folder (probe.dir; netunits/data/broden.py). Reads params `probe`
and `data`; writes
data/probe/probe.pt (netunits/data/probe.py) and artifacts/plots/probe_concepts.png (a few
digits and their masks).
"""
import torch

from netunits.concepts import CONCEPTS, concept_annotations
from netunits.data.broden import load_broden
from netunits.data.probe import pack_masks
from netunits.data.registry import get_dataset
from netunits.data.subsets import resize_uint8, select_indices
from netunits.errors import PipelineError
from netunits.files import remove_stale_temps, save_torch
from netunits.plots import close, probe_figure, save_figure
from netunits.runtime import check_fits, run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def mnist_probe(params, data, source):
    spec = get_dataset(data.dataset, source=source)
    if spec.name != "mnist":
        raise PipelineError(f"{source}: 'probe.source' is 'mnist' but 'data.dataset' is {spec.name!r}; the "
                            f"computed concepts are those of handwritten digits")
    left = spec.split_sizes["test"] - data.test_size
    if params.size > left:
        raise PipelineError(f"{source}: 'probe.size' is {params.size}; after the {data.test_size} ROF "
                            f"test digits the test split has {left} left")
    images, labels = spec.load(data.source, data.dir, "data/raw")["test"]
    # the first digits that the ROF test subset does not use (with selection first: those after it)
    used = select_indices(labels, data.test_size, data.selection, data.seed, "data.test_size", spec.n_classes,
                          source)
    free = torch.ones(len(labels), dtype=torch.bool)
    free[used] = False
    indices = torch.nonzero(free).flatten()[:params.size]
    images, labels = images[indices], labels[indices]
    greys = resize_uint8(images, params.mask_size)[:, 0].float().numpy() / 255.0
    masks, image_labels = concept_annotations(greys, labels.numpy())
    categories = list(dict.fromkeys(c[1] for c in CONCEPTS))
    return {"images": resize_uint8(images, data.image_size), "labels": labels.clone(),
            "indices": indices, "mask_size": params.mask_size,
            "pixel_masks": pack_masks(masks), "image_labels": torch.from_numpy(image_labels),
            "annotated": torch.ones(len(labels), len(categories), dtype=torch.bool),
            "concepts": [{"name": n, "category": c, "level": lv, "description": d} for n, c, lv, d in CONCEPTS],
            "categories": categories, "source": "mnist"}, masks


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    config = stage_config(args, "probe", "data")
    params, data, source = config.probe, config.data, config.source
    paths = stage_paths("probe_concepts", args.run_dir)
    out, figure_path = paths["probe"], paths["probe_figure"]
    remove_stale_temps(out, figure_path)
    check_fits(params.size * (3 * data.image_size ** 2 + len(CONCEPTS) * params.mask_size ** 2), out.parent,
               "the probe set")
    if params.source == "mnist":
        probe, masks = mnist_probe(params, data, source)
    else:
        probe, masks = load_broden(params.dir, data.image_size, params.mask_size, params.size, source)
        probe["pixel_masks"] = pack_masks(masks)
    save_torch(probe, out)
    shown = probe["images"][:6].permute(0, 2, 3, 1).numpy()
    figure = probe_figure(shown[..., 0] if shown.shape[-1] == 1 else shown, masks[:6, :16],
                          [c["name"] for c in probe["concepts"] if c["level"] == "pixel"][:16])
    save_figure(figure, figure_path, 100)
    close(figure)
    n_pixel = masks.shape[1]
    shares = masks.reshape(*masks.shape[:2], -1).mean(axis=(0, 2))
    print(f"probe: {len(probe['labels'])} digits at {data.image_size} px, masks at {params.mask_size} px; "
          + ", ".join(f"{c['name']} {s:.3f}" for c, s in zip(probe["concepts"], shares)))
    print("image-level concepts: " + ", ".join(
        f"{c['name']} {int(n)}" for c, n in zip(probe["concepts"][n_pixel:], probe["image_labels"].sum(0))))


if __name__ == "__main__":
    run_stage(main)
