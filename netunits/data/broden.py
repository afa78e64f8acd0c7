"""A probe set in the Broden format (Bau et al. 2017), so a dissection can use Broden or any data
set written in its layout (`probe.source: broden`, `probe.dir`):

- `index.csv`: `image, split, ih, iw, sh, sw` and one column per category; a cell holds
  `;`-separated entries: PNG file names for pixel-level categories, label numbers for
  image-level ones (an empty cell: the category is not annotated on that image);
- `category.csv` (`name, ...`), `label.csv` (`number, name, category, ...`) and, per category,
  `c_<category>.csv` (the category's codes; read only to check it is there);
- the files under `images/`; a mask PNG's label at a pixel is R + 256 * G.

Every (category, label) that occurs becomes a concept, pixel-level categories first; images are
resized to the model's size, masks (nearest neighbour) to probe.mask_size. Each image's masks
are bit-packed as it is read and kept only for the concepts present on it (SparsePackedMasks),
so the reader holds a few masks per image whatever the number of concepts.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netunits.data.probe import SparsePackedMasks
from netunits.errors import PipelineError

FIXED_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")


def _read_table(path, what):
    if not path.is_file():
        raise PipelineError(f"probe.dir '{path.parent}': {path.name} is missing; a Broden-format folder holds "
                            f"index.csv, category.csv, label.csv, c_<category>.csv and images/ ({what})")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _open_image(path, mode):
    from PIL import Image
    if not path.is_file():
        raise PipelineError(f"{path}: listed in index.csv but missing")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except Exception as exc:
        raise PipelineError(f"{path}: not a readable image ({exc})") from None


def _resize(array, size, nearest):
    from PIL import Image
    image = Image.fromarray(array)
    return np.asarray(image.resize((size, size), Image.NEAREST if nearest else Image.BILINEAR))


def load_broden(folder: str | Path, image_size: int, mask_size: int, size: int,
                source: str = "params.yaml") -> dict[str, Any]:
    """The first `size` rows of index.csv as a probe set (netunits/data/probe.py), its pixel
    masks a SparsePackedMasks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"probe.dir '{folder}': no such folder; it must be a Broden-format folder "
                            f"(index.csv, category.csv, label.csv, c_<category>.csv, images/)")
    index = _read_table(folder / "index.csv", "the image index")
    try:
        categories = [row["name"] for row in _read_table(folder / "category.csv", "the categories")]
    except KeyError:
        raise PipelineError(f"{folder / 'category.csv'}: needs a 'name' column") from None
    try:
        names = {int(row["number"]): row["name"] for row in _read_table(folder / "label.csv", "the labels")}
    except (KeyError, ValueError, TypeError) as exc:
        raise PipelineError(f"{folder / 'label.csv'}: needs integer 'number' and 'name' columns ({exc!r})") from None
    for category in categories:
        _read_table(folder / f"c_{category}.csv", f"the codes of category {category}")
    if not index or any(column not in index[0] for column in FIXED_COLUMNS):
        raise PipelineError(f"{folder / 'index.csv'}: needs the columns {', '.join(FIXED_COLUMNS)} and one per category")
    missing = [c for c in categories if c not in index[0]]
    if missing:
        raise PipelineError(f"{folder / 'index.csv'}: no column for category {missing[0]!r} of category.csv")
    if size > len(index):
        raise PipelineError(f"{source}: 'probe.size' is {size} but {folder / 'index.csv'} lists {len(index)} images")
    rows = index[:size]
    # a category is pixel-level if its cells name PNG files
    pixel_level = {c: any(e.endswith(".png") for row in rows for e in row[c].split(";") if e) for c in categories}
    ordered = [c for c in categories if pixel_level[c]] + [c for c in categories if not pixel_level[c]]
    images, per_image = torch.empty(len(rows), 3, image_size, image_size, dtype=torch.uint8), []
    for line, row in enumerate(rows, start=2):
        try:
            image, found = _read_row(folder, row, ordered, pixel_level, image_size, mask_size)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise PipelineError(f"{folder / 'index.csv'}: line {line} is malformed ({exc!r}); see the Broden format "
                                f"in netunits/data/broden.py") from None
        images[line - 2] = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        per_image.append(found)
    return _assemble(rows, images, per_image, ordered, categories, pixel_level, names, mask_size)


def _read_row(folder, row, ordered, pixel_level, image_size, mask_size):
    """One index.csv row: the image resized, and per category (pixel level?, value): for a
    pixel-level category {label number: its mask bit-packed}, for an image-level one the set of
    label numbers; value None where the category is not annotated."""
    image = _open_image(folder / "images" / row["image"], "RGB")
    if image.shape[:2] != (int(row["ih"]), int(row["iw"])):
        raise PipelineError(f"{folder / 'images' / row['image']}: {image.shape[1]} x {image.shape[0]} pixels but "
                            f"index.csv says {row['iw']} x {row['ih']}")
    resized = _resize(image, image_size, nearest=False)
    found = {}
    for category in ordered:
        entries = [e for e in row[category].split(";") if e]
        if pixel_level[category]:
            labels = np.zeros((mask_size, mask_size), dtype=np.int64)
            for entry in entries:
                png = _open_image(folder / "images" / entry, "RGB").astype(np.int64)
                if png.shape[:2] != (int(row["sh"]), int(row["sw"])):
                    raise PipelineError(f"{folder / 'images' / entry}: {png.shape[1]} x {png.shape[0]} pixels but "
                                        f"index.csv says {row['sw']} x {row['sh']}")
                number = png[..., 0] + 256 * png[..., 1]
                at_mask_size = _resize(number.astype(np.int32), mask_size, nearest=True)
                labels = np.where(at_mask_size > 0, at_mask_size, labels)
            found[category] = (True, {int(number): np.packbits(labels == number)
                                      for number in np.unique(labels) if number} if entries else None)
        else:
            found[category] = (False, {int(e) for e in entries} if entries else None)
    return resized, found


def _assemble(rows, images, per_image, ordered, categories, pixel_level, names, mask_size):
    concepts = []           # (category, label number), pixel-level first
    for category in ordered:
        present = set()
        for found in per_image:
            is_pixel, value = found[category]
            if value is not None:
                present |= set(value)
        concepts += [(category, number) for number in sorted(present)]
    n_pixel = sum(pixel_level[c] for c, _ in concepts)
    column = {concept: j for j, concept in enumerate(concepts)}
    pair_image, pair_concept, pair_bits = [], [], []
    image_labels = np.zeros((len(rows), len(concepts) - n_pixel), dtype=bool)
    annotated = np.zeros((len(rows), len(categories)), dtype=bool)
    for i, found in enumerate(per_image):
        present = []
        for category, (is_pixel, value) in found.items():
            annotated[i, categories.index(category)] = value is not None
            for number in value or ():
                if is_pixel:
                    present.append((column[category, number], value[number]))
                else:
                    image_labels[i, column[category, number] - n_pixel] = True
        for j, bits in sorted(present, key=lambda pair: pair[0]):
            pair_image.append(i)
            pair_concept.append(j)
            pair_bits.append(bits)
    n_bytes = -(-mask_size * mask_size // 8)
    bits = np.stack(pair_bits) if pair_bits else np.zeros((0, n_bytes), dtype=np.uint8)
    masks = SparsePackedMasks(torch.tensor(pair_image, dtype=torch.int64), torch.tensor(pair_concept, dtype=torch.int64),
                              torch.from_numpy(bits), len(rows), n_pixel)
    counts = {}
    for _, number in concepts:
        counts[number] = counts.get(number, 0) + 1
    records = [{"name": names.get(number, str(number)) + (f" ({category})" if counts[number] > 1 else ""),
                "category": category, "level": "pixel" if j < n_pixel else "image",
                "description": f"Broden label {number} in category {category}"}
               for j, (category, number) in enumerate(concepts)]
    return {"images": images, "labels": torch.full((len(rows),), -1, dtype=torch.int64),
            "indices": torch.arange(len(rows)), "mask_size": mask_size, "pixel_masks": masks, "concepts": records,
            "categories": categories, "image_labels": torch.from_numpy(image_labels),
            "annotated": torch.from_numpy(annotated), "source": "broden"}
