"""`python -m bench.synthetic_broden`: a SYNTHETIC probe set in Broden's folder format, for benchmarks.

The images are drawn shapes, stripe patches and colour patches on gradient backgrounds. They are
not photographs and their concepts mean nothing about what a network learns from real images:
use this folder to time and size the dissection passes at Broden's scale, never for findings.

What is written (the layout netunits/data/broden.py reads, unchanged):
- `images/synthetic/<i>.jpg`: N RGB images of 224 x 224 px (JPEG, quality 90);
- `images/synthetic/<i>_<category>.png`: per image and annotated pixel-level category, a
  112 x 112 label mask, label number = R + 256 * G (0: none of the category's concepts);
- `index.csv` (`image, split, ih, iw, sh, sw, shape, stripes, colour, scene`; every tenth image
  is `val`, the others `train`), `category.csv`, `label.csv` and `c_<category>.csv`.

Concepts: --concepts C over four categories, label numbers 1 to C in this order: `shape`
(pixel level, the rest, about 40%: disc, square, diamond, triangle, ring, cross, hbar and vbar, each in many
fill colours), `stripes` (pixel level, 20%: an angle and a period), `colour` (pixel level, 20%:
a flat colour) and `scene` (image level, 20%: the background's two colours); 20% is
rounded, and at least one. C is at
least 4.

Each image has one scene (its background) and exactly --per-image K (default 6, at most 16)
distinct pixel-level concepts, drawn uniformly from every pixel-level concept, each in its own
cell of a 4 x 4 grid, so regions never overlap and every drawn concept is visible. Each
category is left unannotated on an image with probability --unannotated (default 0.2): its
cell in index.csv is empty and no mask is written, though its concepts are still drawn. An
annotated pixel-level category whose concepts are absent from the image gets an all-zero mask.

Seeded: image i is drawn from numpy's generator seeded with (seed, i), so the same seed writes
the same bytes (with the same Pillow and zlib), and the first images do not depend on N.
Usage: python -m bench.synthetic_broden --images N --concepts C --out DIR [--seed 0]
       [--per-image 6] [--unannotated 0.2]
"""
from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SIZE = 224
MASK_SIZE = 112
GRID = 4                     # cells per side; a drawn concept fills part of one cell
CATEGORIES = ("shape", "stripes", "colour", "scene")
PIXEL_CATEGORIES = CATEGORIES[:3]
SHARES = {"stripes": 0.2, "colour": 0.2, "scene": 0.2}      # shape: the rest
SHAPES = ("disc", "square", "diamond", "triangle", "ring", "cross", "hbar", "vbar")
ANGLES = 12                  # stripe angles, 15 degrees apart
JPEG_QUALITY = 90
NOISE = 4.0                  # the images' Gaussian noise, grey levels


@dataclass(frozen=True)
class Concept:
    number: int              # Broden label number, from 1
    name: str
    category: str
    rgb: tuple               # the fill (shape, colour), the stripes' dark colour, the scene's first colour
    rgb2: tuple              # the stripes' light colour, the scene's second colour (else = rgb)
    kind: str = ""           # shape: which silhouette
    angle: float = 0.0       # stripes: degrees
    period: int = 0          # stripes: px at 224


def category_sizes(n_concepts: int) -> dict[str, int]:
    """How many concepts each category gets: 20% (at least one) each to stripes, colour and scene,
    the rest (about 40%) to shape."""
    if n_concepts < len(CATEGORIES):
        raise SystemExit(f"bench.synthetic_broden: --concepts is {n_concepts}; it must be at least "
                         f"{len(CATEGORIES)}, one per category")
    sizes = {c: max(1, round(share * n_concepts)) for c, share in SHARES.items()}
    return {"shape": n_concepts - sum(sizes.values()), **sizes}


def _colour(j: int, offset: float = 0.0) -> tuple:
    """A deterministic, well-spread RGB: hue by the golden ratio, three saturation and value levels."""
    hue = (j * 0.6180339887 + offset) % 1.0
    saturation, value = (1.0, 0.75, 0.45)[j % 3], (1.0, 0.8, 0.6)[(j // 3) % 3]
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    rgb = value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1)
    return tuple(int(round(255 * v)) for v in rgb)


def concept_plan(n_concepts: int) -> list[Concept]:
    """Every concept, label numbers 1 to n_concepts, category by category (CATEGORIES' order)."""
    sizes, concepts = category_sizes(n_concepts), []
    for j in range(sizes["shape"]):
        kind = SHAPES[j % len(SHAPES)]
        fill = _colour(j // len(SHAPES), 0.5)
        concepts.append(Concept(len(concepts) + 1, f"{kind}-{j // len(SHAPES):03d}", "shape", fill, fill, kind=kind))
    for j in range(sizes["stripes"]):
        angle, period = 180.0 * (j % ANGLES) / ANGLES, 4 + 2 * (j // ANGLES)
        concepts.append(Concept(len(concepts) + 1, f"stripes-a{int(angle):03d}-p{period:03d}", "stripes",
                                _colour(j, 0.25), (235, 235, 235), angle=angle, period=period))
    for j in range(sizes["colour"]):
        rgb = _colour(j)
        concepts.append(Concept(len(concepts) + 1, f"colour-{j:04d}", "colour", rgb, rgb))
    for j in range(sizes["scene"]):
        concepts.append(Concept(len(concepts) + 1, f"scene-{j:04d}", "scene", _colour(j, 0.1), _colour(j + 7, 0.6)))
    return concepts


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [0, 1): (y, x), each size x size."""
    centres = (np.arange(size) + 0.5) / size
    return np.meshgrid(centres, centres, indexing="ij")


def _region(concept: Concept, y: np.ndarray, x: np.ndarray, place: tuple) -> np.ndarray:
    """Where a concept's region lies (bool), at the pixel centres y, x; place: (cy, cx, radius,
    ry, rx) in image units (ry, rx: the colour patch's ellipse axes, as shares of radius)."""
    cy, cx, radius, ry, rx = place
    dy, dx = (y - cy) / radius, (x - cx) / radius
    if concept.category == "stripes":
        return (np.abs(dx) < 0.9) & (np.abs(dy) < 0.9)
    if concept.category == "colour":
        return (dx / rx) ** 2 + (dy / ry) ** 2 < 1
    ax, ay = np.abs(dx), np.abs(dy)
    return {"disc": lambda: dx ** 2 + dy ** 2 < 1,
            "square": lambda: np.maximum(ax, ay) < 0.8,
            "diamond": lambda: ax + ay < 1,
            "triangle": lambda: (dy < 0.7) & (dy > 2 * ax - 1),
            "ring": lambda: (dx ** 2 + dy ** 2 < 1) & (dx ** 2 + dy ** 2 > 0.55 ** 2),
            "cross": lambda: ((ax < 0.3) & (ay < 1)) | ((ay < 0.3) & (ax < 1)),
            "hbar": lambda: (ay < 0.3) & (ax < 1),
            "vbar": lambda: (ax < 0.3) & (ay < 1)}[concept.kind]()


@dataclass
class Drawn:
    """One synthetic image as drawn: the RGB image before JPEG (224 x 224 x 3 uint8), each
    pixel-level category's label numbers (112 x 112 int64, 0: none), the scene's label number,
    whether each category is annotated, and the pixel-level concepts drawn (label numbers)."""
    image: np.ndarray
    labels: dict[str, np.ndarray]
    scene: int
    annotated: dict[str, bool]
    drawn: list[int]


def draw_image(concepts: list[Concept], seed: int, index: int, per_image: int = 6,
               unannotated: float = 0.2) -> Drawn:
    """Image `index` of the probe set that `seed` draws (independent of the number of images)."""
    pixel = [c for c in concepts if c.category != "scene"]
    scenes = [c for c in concepts if c.category == "scene"]
    rng = np.random.default_rng([seed, index])
    chosen = rng.choice(len(pixel), per_image, replace=False)
    cells = rng.choice(GRID * GRID, per_image, replace=False)
    scene = scenes[int(rng.integers(len(scenes)))]
    annotated = dict(zip(CATEGORIES, (rng.random(len(CATEGORIES)) >= unannotated).tolist()))
    # a region reaches at most 0.08 + 0.42 cells from its cell's centre: it stays inside its cell
    places = [(((cell // GRID) + 0.5 + rng.uniform(-0.08, 0.08)) / GRID,
               ((cell % GRID) + 0.5 + rng.uniform(-0.08, 0.08)) / GRID,
               rng.uniform(0.25, 0.42) / GRID, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
              for cell in cells]
    gradient_angle = rng.uniform(0, 2 * math.pi)
    noise = rng.normal(0.0, NOISE, (IMAGE_SIZE, IMAGE_SIZE, 3))

    y, x = _grid(IMAGE_SIZE)
    t = np.clip(0.5 + (x - 0.5) * math.cos(gradient_angle) + (y - 0.5) * math.sin(gradient_angle), 0, 1)[..., None]
    image = (1 - t) * np.array(scene.rgb, float) + t * np.array(scene.rgb2, float)
    my, mx = _grid(MASK_SIZE)
    labels = {c: np.zeros((MASK_SIZE, MASK_SIZE), dtype=np.int64) for c in PIXEL_CATEGORIES}
    for j, place in zip(chosen, places):
        concept = pixel[j]
        inside = _region(concept, y, x, place)
        if concept.category == "stripes":
            theta = math.radians(concept.angle)
            along = (x * math.cos(theta) + y * math.sin(theta)) * IMAGE_SIZE / concept.period
            light = (np.floor(2 * along) % 2 == 1)[..., None]
            fill = np.where(light, np.array(concept.rgb2, float), np.array(concept.rgb, float))
        else:
            fill = np.array(concept.rgb, float)
        image = np.where(inside[..., None], fill, image)
        labels[concept.category][_region(concept, my, mx, place)] = concept.number
    image = np.clip(np.round(image + noise), 0, 255).astype(np.uint8)
    return Drawn(image, labels, scene.number, annotated, sorted(pixel[j].number for j in chosen))


def label_png(numbers: np.ndarray) -> Image.Image:
    """A Broden mask: label number = R + 256 * G."""
    rgb = np.zeros((*numbers.shape, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1] = numbers % 256, numbers // 256
    return Image.fromarray(rgb)


def _write_table(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_synthetic_broden(out: str | Path, images: int, concepts: int, seed: int = 0, per_image: int = 6,
                           unannotated: float = 0.2) -> list[Concept]:
    """Write the synthetic probe set into `out` (a new or empty folder); returns its concepts."""
    out = Path(out)
    if images < 1:
        raise SystemExit(f"bench.synthetic_broden: --images is {images}; it must be at least 1")
    plan = concept_plan(concepts)
    n_pixel = sum(c.category != "scene" for c in plan)
    if not 1 <= per_image <= min(GRID * GRID, n_pixel):
        raise SystemExit(f"bench.synthetic_broden: --per-image is {per_image}; it must be from 1 to "
                         f"{min(GRID * GRID, n_pixel)} (the grid's {GRID * GRID} cells and the "
                         f"{n_pixel} pixel-level concepts)")
    if not 0 <= unannotated < 1:
        raise SystemExit(f"bench.synthetic_broden: --unannotated is {unannotated}; it must be in [0, 1)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"bench.synthetic_broden: --out {out} exists and is not an empty folder")
    (out / "images" / "synthetic").mkdir(parents=True)
    frequency = {c.number: 0 for c in plan}          # annotated images showing the concept
    coverage = {c.number: 0.0 for c in plan}         # summed share of those images it covers
    rows = []
    for i in range(images):
        drawn = draw_image(plan, seed, i, per_image, unannotated)
        stem = f"synthetic/{i:06d}"
        Image.fromarray(drawn.image).save(out / "images" / f"{stem}.jpg", quality=JPEG_QUALITY)
        cells = []
        for category in PIXEL_CATEGORIES:
            if not drawn.annotated[category]:
                cells.append("")
                continue
            label_png(drawn.labels[category]).save(out / "images" / f"{stem}_{category}.png")
            cells.append(f"{stem}_{category}.png")
            numbers, counts = np.unique(drawn.labels[category], return_counts=True)
            for number, count in zip(numbers.tolist(), counts.tolist()):
                if number:
                    frequency[number] += 1
                    coverage[number] += count / MASK_SIZE ** 2
        cells.append(str(drawn.scene) if drawn.annotated["scene"] else "")
        if drawn.annotated["scene"]:
            frequency[drawn.scene] += 1
            coverage[drawn.scene] += 1.0
        rows.append([f"{stem}.jpg", "val" if i % 10 == 9 else "train", IMAGE_SIZE, IMAGE_SIZE, MASK_SIZE,
                     MASK_SIZE, *cells])
    _write_table(out / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", *CATEGORIES], rows)
    members = {category: [c for c in plan if c.category == category] for category in CATEGORIES}
    _write_table(out / "category.csv", ["name", "first", "last", "count", "frequency"],
                 [[category, m[0].number, m[-1].number, len(m), sum(frequency[c.number] for c in m)]
                  for category, m in members.items()])
    _write_table(out / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
                 [[c.number, c.name, f"{c.category}({frequency[c.number]})", frequency[c.number],
                   f"{coverage[c.number] / images:.6f}", ""] for c in plan])
    for category, m in members.items():
        _write_table(out / f"c_{category}.csv", ["code", "number", "name", "frequency", "coverage"],
                     [[code, c.number, c.name, frequency[c.number], f"{coverage[c.number] / images:.6f}"]
                      for code, c in enumerate(m, start=1)])
    return plan


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, required=True, help="how many images")
    parser.add_argument("--concepts", type=int, required=True, help="how many concepts over the four categories")
    parser.add_argument("--out", required=True, help="a new or empty folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-image", type=int, default=6, help="pixel-level concepts drawn on each image")
    parser.add_argument("--unannotated", type=float, default=0.2,
                        help="probability that a category is not annotated on an image")
    args = parser.parse_args(argv)
    plan = write_synthetic_broden(args.out, args.images, args.concepts, args.seed, args.per_image, args.unannotated)
    sizes = category_sizes(len(plan))
    print(f"{args.out}: {args.images} synthetic images, {len(plan)} concepts ("
          + ", ".join(f"{c} {n}" for c, n in sizes.items()) + f"), seed {args.seed}")


if __name__ == "__main__":
    main()
