"""Concepts of small natural images (CIFAR-10, 32 x 32 px), computed from the pixels with
scikit-image: a probe set for network dissection on a natural-image network.

Colour naming. Broden's colour category names each pixel with one of the eleven basic colour
terms of Berlin and Kay (black, blue, brown, grey, green, orange, pink, purple, red, white,
yellow), using the lookup table learned by van de Weijer et al. ("Learning Color Names for
Real-World Applications", IEEE TIP 2009), which is not available here. The stand-ins name a
pixel by its nearest centroid in CIELab (scikit-image's rgb2lab, D65), where the centroids are
colours named in the xkcd colour survey (R. Munroe, 2010: about 222,500 participants naming
colours shown on their monitors; matplotlib ships its 949 most common names and their sRGB as
matplotlib.colors.XKCD_COLORS):

- `xkcd_names` (the default): every survey name whose last word (its head noun) is a basic term,
  558 colours ("sky blue", "dusty green", "greenish grey" -> blue, green, grey; the rule is
  literal: "blue with a hint of purple" counts as purple); the many muted colours among them
  name the muted colours of photographs;
- `xkcd_basic`: only "<term>", "light <term>" and "dark <term>" (29 colours, listed below).
  One colour per term is not enough in CIELab: lightness dominates the distance, so a sky
  blue would fall to white or grey; the light and dark variants cover each term's lightness.
  Its saturated centroids leave muted colours to grey (on CIFAR-10 about 67% of the pixels,
  against 56% with `xkcd_names`).

Every pixel-level concept is a boolean mask at the mask resolution; every image-level concept a
label of the whole image. One line each (concept_table); data-dependent cut-offs (lightness,
local contrast, brightness, colourfulness) are terciles over the probe set.
"""
from __future__ import annotations

import numpy as np
import torch

from netunits.errors import PipelineError

TERMS = ("black", "blue", "brown", "grey", "green", "orange", "pink", "purple", "red", "white", "yellow")

# xkcd colour survey (Munroe 2010), as in matplotlib.colors.XKCD_COLORS: term -> sRGB hex of
# "<term>", "light <term>", "dark <term>" (black and white have no variants in the survey)
XKCD_CENTROIDS = {
    "black": ("#000000",),
    "blue": ("#0343df", "#95d0fc", "#00035b"),
    "brown": ("#653700", "#ad8150", "#341c02"),
    "grey": ("#929591", "#d8dcd6", "#363737"),
    "green": ("#15b01a", "#96f97b", "#033500"),
    "orange": ("#f97306", "#fdaa48", "#c65102"),
    "pink": ("#ff81c0", "#ffd1df", "#cb416b"),
    "purple": ("#7e1e9c", "#bf77f6", "#35063e"),
    "red": ("#e50000", "#ff474c", "#840000"),
    "white": ("#ffffff",),
    "yellow": ("#ffff14", "#fffe7a", "#d5b60a"),
}
COLOUR_RULES = ("xkcd_names", "xkcd_basic")

POSITION = {
    "top_half": "the upper 16 of 32 rows (the upper half at any mask size)",
    "bottom_half": "the lower half of the rows",
    "left_half": "the left half of the columns",
    "right_half": "the right half of the columns",
    "centre": "the central square of half the side (rows and columns 8 to 23 of 32)",
    "border": "every pixel outside the central square",
}
BRIGHTNESS = ("low", "medium", "high")


def concept_table(class_names: list[str]) -> list[tuple[str, str, str, str]]:
    """(name, category, level, description) of every concept, pixel-level first."""
    pixel = [(term, "colour", "pixel", f"pixels named {term}: nearest xkcd survey colour in CIELab")
             for term in TERMS]
    pixel += [
        ("edge", "edge", "pixel", "Canny edges (scikit-image, sigma 1.5) of any of R, G and B"),
        ("bright", "lightness", "pixel", "pixels whose CIELab lightness is in the probe set's highest third"),
        ("dark", "lightness", "pixel", "pixels whose CIELab lightness is in the probe set's lowest third"),
        ("textured", "texture", "pixel", "pixels whose 3 x 3 lightness standard deviation is in the highest third"),
        ("flat", "texture", "pixel", "pixels whose 3 x 3 lightness standard deviation is in the lowest third"),
    ]
    pixel += [(name, "position", "pixel", description) for name, description in POSITION.items()]
    image = [(name, "class", "image", f"the image's label is {name}") for name in class_names]
    image += [(f"dominant_{term}", "dominant_colour", "image", f"{term} names more of the image's pixels than any "
               f"other term") for term in TERMS]
    image += [(f"brightness_{level}", "brightness", "image", f"mean CIELab lightness of the image in the probe "
               f"set's {level} third") for level in BRIGHTNESS]
    image += [(f"colourfulness_{level}", "colourfulness", "image", f"Hasler and Suesstrunk's (2003) colourfulness "
               f"of the image in the probe set's {level} third") for level in BRIGHTNESS]
    return pixel + image


def check_colour_rule(rule: str, key: str = "probe.colour_rule") -> None:
    if rule not in COLOUR_RULES:
        raise PipelineError(f"params.yaml: '{key}' is {rule!r}; allowed: {', '.join(COLOUR_RULES)}")


def xkcd_named_colours(rule: str) -> list[tuple[str, str]]:
    """[(hex sRGB, term)] of a rule's centroids: xkcd_basic in TERMS order (term, light, dark);
    xkcd_names in matplotlib's order of the survey's names."""
    if rule == "xkcd_basic":
        return [(value, term) for term in TERMS for value in XKCD_CENTROIDS[term]]
    from matplotlib.colors import XKCD_COLORS
    named = []
    for name, value in XKCD_COLORS.items():
        head = name.removeprefix("xkcd:").replace("gray", "grey").split()[-1]
        if head in TERMS:
            named.append((value, head))
    return named


def _centroids_lab(rule):
    """(centroids x 3 CIELab, term index of each)."""
    from skimage.color import rgb2lab
    named = xkcd_named_colours(rule)
    rgb = [[int(value[i:i + 2], 16) / 255.0 for i in (1, 3, 5)] for value, _ in named]
    return rgb2lab(np.array(rgb)[None])[0], np.array([TERMS.index(term) for _, term in named])


def name_colours(rgb: np.ndarray, rule: str = "xkcd_names") -> np.ndarray:
    """Term index (into TERMS) per pixel: rgb uint8 ... x 3 (channels last); ties go to the
    earlier centroid (xkcd_named_colours' order)."""
    from skimage.color import rgb2lab
    check_colour_rule(rule)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"name_colours takes uint8 RGB with channels last, got {rgb.dtype} {rgb.shape}")
    centroids, owners = _centroids_lab(rule)
    # each distinct colour once, in chunks of 4096: exact squared distances without BLAS, in
    # bounded memory (a chunk's distance table is 4096 x centroids x 3 floats)
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed.ravel(), return_inverse=True)
    distinct = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1)
    lab = rgb2lab(distinct.reshape(-1, 1, 3) / 255.0).reshape(-1, 3)
    term = np.empty(len(colours), dtype=np.int64)
    for start in range(0, len(colours), 4096):
        block = lab[start:start + 4096]
        distance = ((block[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        term[start:start + 4096] = owners[distance.argmin(axis=1)]
    return term[inverse].reshape(rgb.shape[:-1])


def colourfulness(rgb: np.ndarray) -> np.ndarray:
    """Hasler and Suesstrunk's colourfulness M of each image (rgb float N x H x W x 3 in 0..255):
    rg = R - G, yb = (R + G) / 2 - B, M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    axes = (1, 2)
    return np.sqrt(rg.var(axis=axes) + yb.var(axis=axes)) + 0.3 * np.sqrt(rg.mean(axis=axes) ** 2
                                                                           + yb.mean(axis=axes) ** 2)


def _local_std(lightness):
    """3 x 3 standard deviation of each image's lightness (N x H x W), edges reflected."""
    from scipy.ndimage import uniform_filter
    mean = uniform_filter(lightness, size=(1, 3, 3), mode="reflect")
    square = uniform_filter(lightness * lightness, size=(1, 3, 3), mode="reflect")
    return np.sqrt(np.clip(square - mean * mean, 0.0, None))


def _colour_edges(image):
    """Canny edges of each RGB channel (values in [0, 1], scikit-image's default thresholds),
    joined: a boundary between two colours of equal lightness is an edge too."""
    from skimage.feature import canny
    channels = image.astype(np.float64) / 255.0
    return np.logical_or.reduce([canny(channels[..., c], sigma=1.5) for c in range(3)])


def _position_masks(size):
    rows, cols = np.indices((size, size))
    half, quarter = size / 2.0, size / 4.0
    centre = (rows >= quarter) & (rows < size - quarter) & (cols >= quarter) & (cols < size - quarter)
    return {"top_half": rows < half, "bottom_half": rows >= half, "left_half": cols < half,
            "right_half": cols >= half, "centre": centre, "border": ~centre}


def _terciles(values):
    return tuple(np.quantile(values, [1 / 3, 2 / 3]))


def _level(values, cuts):
    """0, 1, 2: at or below the lower cut, between, above the upper cut (so a probe of equal values
    is all low, not all medium)."""
    return np.where(values <= cuts[0], 0, np.where(values > cuts[1], 2, 1))


def natural_annotations(rgb: np.ndarray, labels: np.ndarray, class_names: list[str],
                        rule: str = "xkcd_names") -> tuple[np.ndarray, np.ndarray]:
    """Masks and labels for a probe set of natural images: rgb uint8 N x H x W x 3 at the mask
    resolution, labels int N. Returns (pixel masks bool N x P x H x W, image labels bool N x I),
    in concept_table order."""
    from skimage.color import rgb2lab
    rgb = np.asarray(rgb)
    n, size = len(rgb), rgb.shape[1]
    names = name_colours(rgb, rule)                                           # N x H x W
    lightness = rgb2lab(rgb.reshape(-1, size, 3) / 255.0).reshape(n, size, size, 3)[..., 0]
    contrast = _local_std(lightness)
    light_cuts, contrast_cuts = _terciles(lightness), _terciles(contrast)
    edges = np.stack([_colour_edges(image) for image in rgb])
    position = _position_masks(size)
    pixel = {term: names == index for index, term in enumerate(TERMS)}
    pixel.update({"edge": edges, "bright": lightness > light_cuts[1], "dark": lightness < light_cuts[0],
                  "textured": contrast > contrast_cuts[1], "flat": contrast < contrast_cuts[0]})
    pixel.update({name: np.broadcast_to(mask, (n, size, size)) for name, mask in position.items()})
    table = concept_table(class_names)
    masks = np.stack([pixel[name] for name, _, level, _ in table if level == "pixel"], axis=1)

    counts = np.stack([(names == index).reshape(n, -1).sum(axis=1) for index in range(len(TERMS))], axis=1)
    dominant = counts.argmax(axis=1)                                          # ties: the earlier term
    mean_lightness = lightness.reshape(n, -1).mean(axis=1)
    colourful = colourfulness(rgb)
    brightness_level = _level(mean_lightness, _terciles(mean_lightness))
    colourful_level = _level(colourful, _terciles(colourful))
    on = np.zeros((n, len(table) - masks.shape[1]), dtype=bool)
    image_names = [name for name, _, level, _ in table if level == "image"]
    column = {name: i for i, name in enumerate(image_names)}
    for i in range(n):
        on[i, column[class_names[int(labels[i])]]] = True
        on[i, column[f"dominant_{TERMS[dominant[i]]}"]] = True
        on[i, column[f"brightness_{BRIGHTNESS[brightness_level[i]]}"]] = True
        on[i, column[f"colourfulness_{BRIGHTNESS[colourful_level[i]]}"]] = True
    return masks, on


def natural_probe(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, mask_size: int,
                  class_names: list[str] | tuple[str, ...], source: str = "cifar10",
                  rule: str = "xkcd_names") -> tuple[dict, np.ndarray]:
    """A probe set (netunits/data/probe.py's format) from uint8 N x 3 x S x S images at the
    model's size, their labels and their indices in the split they come from; concepts are
    computed on the images resized to mask_size. Returns (probe, masks bool N x P x M x M)."""
    from netunits.data.probe import pack_masks
    from netunits.data.subsets import resize_uint8
    check_colour_rule(rule)
    if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise PipelineError(f"{source}: the colour probe needs uint8 RGB images N x 3 x S x S, got "
                            f"{images.dtype} {tuple(images.shape)}")
    if len(images) == 0:
        raise PipelineError("params.yaml: 'probe.size' must be at least 1")
    small = resize_uint8(images, mask_size).permute(0, 2, 3, 1).numpy()
    masks, image_labels = natural_annotations(small, labels.numpy(), list(class_names), rule)
    table = concept_table(list(class_names))
    categories = list(dict.fromkeys(c[1] for c in table))
    probe = {"images": images.clone(), "labels": labels.clone(), "indices": torch.as_tensor(indices).clone(),
             "mask_size": int(mask_size), "pixel_masks": pack_masks(masks),
             "image_labels": torch.from_numpy(image_labels),
             "annotated": torch.ones(len(labels), len(categories), dtype=torch.bool),
             "concepts": [{"name": n, "category": c, "level": lv, "description": d} for n, c, lv, d in table],
             "categories": categories, "source": source, "colour_rule": rule}
    return probe, masks
