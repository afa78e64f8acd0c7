"""Concepts of handwritten digits, computed from the pixels with scikit-image: the probe set that
network dissection compares units with when no Broden-style annotation exists.

Every pixel-level concept is a boolean mask at the mask resolution; every image-level concept a
label of the whole image. One line each (CONCEPTS); the data-dependent cut-offs (stroke width,
digit size) are terciles or medians over the probe set, so they adapt to the image size.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

# (name, category, level, description)
CONCEPTS = (
    ("stroke", "stroke", "pixel", "ink: pixels at least half as dark as full ink"),
    ("background", "stroke", "pixel", "paper: every pixel that is not ink"),
    ("centre_line", "skeleton", "pixel", "the stroke's skeleton (scikit-image skeletonize), dilated by one pixel"),
    ("endpoint", "skeleton", "pixel", "skeleton pixels with one skeleton neighbour (stroke ends), dilated to a disc"),
    ("junction", "skeleton", "pixel", "skeleton pixels with three or more skeleton neighbours, dilated to a disc"),
    ("hole", "hole", "pixel", "background enclosed by ink (the loops of 0, 4, 6, 8, 9)"),
    ("thin_stroke", "width", "pixel", "ink whose local stroke width is in the probe set's lowest third"),
    ("thick_stroke", "width", "pixel", "ink whose local stroke width is in the probe set's highest third"),
    ("horizontal", "orientation", "pixel", "ink whose local stroke direction is within 22.5 degrees of horizontal"),
    ("vertical", "orientation", "pixel", "ink whose local stroke direction is within 22.5 degrees of vertical"),
    ("diagonal", "orientation", "pixel", "ink running from lower left to upper right (/)"),
    ("antidiagonal", "orientation", "pixel", "ink running from upper left to lower right (\\)"),
    ("top_half", "position", "pixel", "ink in the upper half of the digit's bounding box"),
    ("bottom_half", "position", "pixel", "ink in the lower half of the digit's bounding box"),
    ("left_half", "position", "pixel", "ink in the left half of the digit's bounding box"),
    ("right_half", "position", "pixel", "ink in the right half of the digit's bounding box"),
    *((f"digit_{d}", "class", "image", f"the image's label is {d}") for d in range(10)),
    ("slant_left", "slant", "image", "shear of the ink's second moments below -0.2 (top leaning left)"),
    ("upright", "slant", "image", "shear between -0.2 and 0.2"),
    ("slant_right", "slant", "image", "shear above 0.2 (top leaning right)"),
    ("thin", "thickness", "image", "mean stroke width (2 x ink area / skeleton length) in the lowest third"),
    ("medium", "thickness", "image", "mean stroke width in the middle third"),
    ("thick", "thickness", "image", "mean stroke width in the highest third"),
    ("small", "size", "image", "bounding-box area below the probe set's median"),
    ("large", "size", "image", "bounding-box area at or above the median"),
    ("holes_0", "holes", "image", "no enclosed hole"),
    ("holes_1", "holes", "image", "one enclosed hole"),
    ("holes_2", "holes", "image", "two or more enclosed holes"),
)
PIXEL_CONCEPTS = [c for c in CONCEPTS if c[2] == "pixel"]
IMAGE_CONCEPTS = [c for c in CONCEPTS if c[2] == "image"]
# a hole smaller than this share of the image is a gap between touching strokes, not a loop
MIN_HOLE_SHARE = 0.004


def _neighbour_counts(skeleton):
    """For every pixel, how many of its 8 neighbours are skeleton pixels."""
    from scipy.ndimage import convolve
    kernel = np.ones((3, 3), dtype=np.int32)
    kernel[1, 1] = 0
    return convolve(skeleton.astype(np.int32), kernel, mode="constant")


def _orientation(grey):
    """Per pixel, the local stroke direction in degrees (0 = horizontal, 90 = vertical; y up),
    from the smoothed structure tensor: a stroke runs across its intensity gradient."""
    from scipy.ndimage import gaussian_filter, sobel
    smooth = gaussian_filter(grey, 1.0)
    gy, gx = sobel(smooth, axis=0), sobel(smooth, axis=1)
    jxx, jyy, jxy = (gaussian_filter(a, 1.5) for a in (gx * gx, gy * gy, gx * gy))
    gradient_angle = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy))      # image rows point down
    return (-(gradient_angle + 90.0)) % 180.0                                 # along the stroke, y up


def digit_geometry(grey: np.ndarray) -> dict[str, Any]:
    """The measurements of one grey digit (float array in [0, 1], ink bright) that the masks
    and image-level concepts need, before the probe-wide cut-offs."""
    from scipy.ndimage import binary_fill_holes, distance_transform_edt, label, maximum_filter
    from skimage.morphology import skeletonize
    ink = grey >= 0.5
    skeleton = skeletonize(ink)
    distance = distance_transform_edt(ink)
    # local width: twice the largest distance to the paper within a small window around the pixel
    width = 2.0 * maximum_filter(distance, size=3) * ink
    holes, n_holes = label(binary_fill_holes(ink) & ~ink)
    if n_holes:
        sizes = np.bincount(holes.ravel())[1:]
        keep = np.flatnonzero(sizes >= MIN_HOLE_SHARE * ink.size) + 1
        hole = np.isin(holes, keep)
        n_holes = len(keep)
    else:
        hole = np.zeros_like(ink)
    rows, cols = np.nonzero(ink)
    if len(rows):
        box = (rows.min(), rows.max(), cols.min(), cols.max())
        y, x = rows - rows.mean(), cols - cols.mean()
        mu02, mu11 = float((y * y).mean()), float((x * y).mean())
        # Morpho-MNIST's slant: the shear that would make the digit upright; rows point down, so a
        # top leaning right has x growing as y falls (mu11 < 0)
        shear = -mu11 / mu02 if mu02 > 0 else 0.0
    else:
        box, shear = (0, 0, 0, 0), 0.0
    return {"ink": ink, "skeleton": skeleton, "width": width, "hole": hole, "n_holes": n_holes, "box": box,
            "shear": shear, "orientation": _orientation(grey),
            "mean_width": 2.0 * ink.sum() / max(1, skeleton.sum()),
            "box_area": (box[1] - box[0] + 1) * (box[3] - box[2] + 1) if len(rows) else 0}


def pixel_masks(geometry: Mapping[str, Any], width_cuts: tuple[float, float]) -> np.ndarray:
    """Bool (len(PIXEL_CONCEPTS) x H x W) for one digit; width_cuts = (thin below, thick above)."""
    from scipy.ndimage import binary_dilation
    from skimage.morphology import disk
    ink, skeleton = geometry["ink"], geometry["skeleton"]
    neighbours = _neighbour_counts(skeleton)
    size = ink.shape[0]
    spot = disk(max(1, size // 28))
    angle = geometry["orientation"]
    top, bottom, left, right = geometry["box"]
    rows, cols = np.indices(ink.shape)
    middle_row, middle_col = (top + bottom) / 2.0, (left + right) / 2.0
    masks = {
        "stroke": ink, "background": ~ink,
        "centre_line": binary_dilation(skeleton),
        "endpoint": binary_dilation(skeleton & (neighbours == 1), spot),
        "junction": binary_dilation(skeleton & (neighbours >= 3), spot),
        "hole": geometry["hole"],
        "thin_stroke": ink & (geometry["width"] < width_cuts[0]),
        "thick_stroke": ink & (geometry["width"] > width_cuts[1]),
        "horizontal": ink & ((angle < 22.5) | (angle >= 157.5)),
        "diagonal": ink & (angle >= 22.5) & (angle < 67.5),
        "vertical": ink & (angle >= 67.5) & (angle < 112.5),
        "antidiagonal": ink & (angle >= 112.5) & (angle < 157.5),
        "top_half": ink & (rows <= middle_row), "bottom_half": ink & (rows > middle_row),
        "left_half": ink & (cols <= middle_col), "right_half": ink & (cols > middle_col),
    }
    return np.stack([masks[name] for name, *_ in PIXEL_CONCEPTS])


def image_labels(geometry: Mapping[str, Any], label: int, thickness_cuts: tuple[float, float],
                 median_box_area: float) -> np.ndarray:
    """Bool len(IMAGE_CONCEPTS) for one digit."""
    shear, width, holes = geometry["shear"], geometry["mean_width"], min(geometry["n_holes"], 2)
    on = {f"digit_{label}",
          "slant_left" if shear < -0.2 else "slant_right" if shear > 0.2 else "upright",
          "thin" if width < thickness_cuts[0] else "thick" if width > thickness_cuts[1] else "medium",
          "small" if geometry["box_area"] < median_box_area else "large",
          f"holes_{holes}"}
    return np.array([name in on for name, *_ in IMAGE_CONCEPTS])


def concept_annotations(greys: Sequence[np.ndarray] | np.ndarray,
                        labels: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks and labels for a probe set: greys float N x H x W in [0, 1]; returns (pixel masks
    bool N x P x H x W, image labels bool N x I)."""
    geometries = [digit_geometry(g) for g in greys]
    widths = np.concatenate([g["width"][g["ink"]] for g in geometries]) if len(geometries) else np.zeros(1)
    width_cuts = tuple(np.quantile(widths, [1 / 3, 2 / 3])) if len(widths) else (0.0, 0.0)
    mean_widths = np.array([g["mean_width"] for g in geometries])
    thickness_cuts = tuple(np.quantile(mean_widths, [1 / 3, 2 / 3]))
    median_box = float(np.median([g["box_area"] for g in geometries]))
    masks = np.stack([pixel_masks(g, width_cuts) for g in geometries])
    labels_on = np.stack([image_labels(g, int(y), thickness_cuts, median_box) for g, y in zip(geometries, labels)])
    return masks, labels_on
