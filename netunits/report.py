"""The unit explorer's pages: a static site (no server, no network) joining every method's answer
per unit, rendered from the jinja2 templates in netunits/templates/report/ (autoescaped).

`index.html` holds one row per unit; `explorer.js` sorts it by any column and filters it by role,
concept and detector status (`index.html#role=test_only` opens filtered); `units/<unit>.html`
holds one unit: its top-activating probe images with its mask (a PNG strip), its activation
histogram with the threshold and its place on the ROF curves (inline SVG charts with axes);
`methods/<method>.html` holds each method's own table with one anchored row per unit.

This module computes the charts' geometry and the strips' pixels; the markup is the templates'.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

# Files of the site that are templates without variables, written beside index.html.
STATIC_FILES = ("report.css", "explorer.js")


@lru_cache(maxsize=1)
def environment() -> Environment:
    return Environment(loader=PackageLoader("netunits", "templates"), autoescape=True,
                       undefined=StrictUndefined, keep_trailing_newline=True)


def render(name: str, **context) -> str:
    """The template netunits/templates/report/<name> rendered with `context`."""
    return environment().get_template(f"report/{name}").render(**context)


# --------------------------------------------------------------------------------------------
# charts: coordinates for templates/report/charts.html
# --------------------------------------------------------------------------------------------
def _r(x: float) -> float:
    """A coordinate to one decimal (small, byte-stable markup)."""
    return round(float(x), 1)


def _frame(width: int, height: int, title: str, xlabel: str, ylabel: str) -> dict:
    return {"width": width, "height": height, "left": 48, "right": width - 12, "top": 22,
            "bottom": height - 36, "title": title, "xlabel": xlabel, "ylabel": ylabel}


def _number(value: float) -> str:
    return f"{value:.3g}"


def curve_chart(accuracy: Sequence[float], subset: str, width: int = 380, height: int = 200) -> dict:
    """A ROF curve: accuracy against the number of units kept, 0..n (unit marked by `mark`)."""
    g = _frame(width, height, f"{subset}: accuracy {accuracy[-1]:.3f} with all units",
               "units kept, in L1 order", "accuracy")
    n = len(accuracy) - 1
    g["n"] = n
    x = lambda i: g["left"] + i / max(n, 1) * (g["right"] - g["left"])          # noqa: E731
    y = lambda a: g["bottom"] - a * (g["bottom"] - g["top"])                    # noqa: E731
    g["points"] = " ".join(f"{x(i):.1f},{y(a):.1f}" for i, a in enumerate(accuracy))
    steps = [k * n / 4 for k in range(5)] if n >= 4 else list(range(n + 1))
    g["xticks"] = [{"at": _r(x(i)), "label": f"{i:.0f}"} for i in steps]
    g["yticks"] = [{"at": _r(y(a)), "label": f"{a:g}"} for a in (0, 0.25, 0.5, 0.75, 1)]
    return g


def mark(chart: dict, rank: int, unit: int) -> dict:
    """The curve with the point where the unit, 0-based `rank` in the retrieval order, enters:
    n = rank + 1 units kept."""
    at = chart["left"] + (rank + 1) / max(chart["n"], 1) * (chart["right"] - chart["left"])
    return {**chart, "marker": _r(at), "marker_label": f"unit {unit}: n = {rank + 1}"}


def histogram_chart(counts: Sequence[int], top: float, threshold: float,
                    width: int = 380, height: int = 200) -> dict:
    """The unit's activation histogram over [0, top] (bar heights on a log scale, ticks in
    counts) with its dissection threshold."""
    g = _frame(width, height, "activation histogram, threshold in red",
               "activation at a map position", "positions")
    counts = np.asarray(counts, dtype=float)
    peak = max(float(np.log1p(counts).max()), 1e-9)
    span, bar = g["bottom"] - g["top"], (g["right"] - g["left"]) / len(counts)
    height_of = lambda c: math.log1p(c) / peak * span                              # noqa: E731
    g["bars"] = [{"x": _r(g["left"] + i * bar), "w": _r(max(bar - 1, 0.5)), "y": _r(g["bottom"] - height_of(c)),
                  "h": _r(height_of(c))} for i, c in enumerate(counts)]
    # decades from 10 (a tick at 1 would sit on the one at 0)
    decades = [10 ** k for k in range(1, int(math.log10(max(counts.max(), 1))) + 1)]
    g["yticks"] = [{"at": _r(g["bottom"]), "label": "0"}] + \
        [{"at": _r(g["bottom"] - height_of(d)), "label": f"{d:,}"} for d in decades]
    x = lambda v: g["left"] + (min(v / top, 1.0) if top > 0 else 0.0) * (g["right"] - g["left"])  # noqa: E731
    g["xticks"] = [{"at": _r(x(v)), "label": _number(v)} for v in (0.0, top / 2, top)]
    g["marker"] = _r(x(threshold))
    g["marker_label"] = f"threshold {_number(threshold)}"
    return g


# --------------------------------------------------------------------------------------------
# image strips
# --------------------------------------------------------------------------------------------
def strip_image(images, masks, size: int, colour=(230, 30, 30)) -> np.ndarray:
    """uint8 H x (k * (size + 2)) x 3: each grey or colour image resized to size x size, its mask
    (bool M x M) tinted over it (red by default)."""
    from PIL import Image
    tiles = []
    for image, mask in zip(images, masks):
        picture = Image.fromarray(image if image.ndim == 3 else np.stack([image] * 3, axis=-1))
        tile = np.asarray(picture.convert("RGB").resize((size, size), Image.BILINEAR)).astype(float)
        tinted = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0
        tile[tinted] = 0.45 * tile[tinted] + 0.55 * np.array(colour)
        tiles.append(np.pad(tile.astype(np.uint8), ((0, 0), (0, 2), (0, 0)), constant_values=255))
    return np.concatenate(tiles, axis=1)


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    # zlib level 3: as small as the default level 6 on these strips, in half the time
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
