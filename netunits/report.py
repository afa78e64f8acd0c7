"""The unit explorer: a static site (no server, no network) joining every method's answer per unit.

`index.html` holds one row per unit with a few lines of JavaScript to sort by any column and
filter by role, concept and detector status (`index.html#role=test_only` opens filtered);
`units/<unit>.html` holds one unit: its top-activating probe images with its mask (a PNG strip of
thumbnails), its activation histogram with the threshold, its best concepts, its classes and its
place on the ROF curves (inline SVG).
"""
from __future__ import annotations

import html

import numpy as np

SCRIPT = """
const rows = Array.from(document.querySelectorAll('#units tbody tr'));
const role = document.getElementById('role'), concept = document.getElementById('concept'),
      detectors = document.getElementById('detectors'), shown = document.getElementById('shown');
function apply() {
  let n = 0;
  for (const row of rows) {
    const ok = (!role.value || row.dataset.role === role.value) &&
               (!concept.value || (row.dataset.concept || '').includes(concept.value)) &&
               (!detectors.checked || row.dataset.detector === '1');
    row.hidden = !ok; if (ok) n++;
  }
  shown.textContent = n;
}
document.querySelectorAll('#units th').forEach((th, col) => th.addEventListener('click', () => {
  const numeric = th.dataset.numeric === '1', down = th.dataset.sorted !== 'up';
  rows.sort((a, b) => {
    const x = a.children[col].dataset.value, y = b.children[col].dataset.value;
    const c = numeric ? (parseFloat(x) - parseFloat(y)) : x.localeCompare(y);
    return down ? c : -c;
  });
  th.dataset.sorted = down ? 'up' : 'down';
  const body = document.querySelector('#units tbody');
  rows.forEach(r => body.appendChild(r));
}));
for (const part of location.hash.slice(1).split('&')) {
  const [key, value] = part.split('=');
  if (key === 'role') role.value = decodeURIComponent(value);
  if (key === 'concept') concept.value = decodeURIComponent(value);
  if (key === 'detectors') detectors.checked = value === '1';
}
[role, concept, detectors].forEach(e => e.addEventListener('input', apply));
apply();
"""

STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}th{cursor:pointer;background:#f4f4f4}
.note{color:#a33}.strip img{image-rendering:pixelated;border:1px solid #ccc}"""


def _cell(value):
    shown = "" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
    return f'<td data-value="{html.escape(str(value if value is not None else ""))}">{html.escape(shown)}</td>'


def index_page(title, columns, rows, notes, roles):
    """columns: (key, label, numeric); rows: dicts with those keys plus 'unit', 'role', 'concept',
    'detector'."""
    head = "".join(f'<th data-numeric="{int(n)}">{html.escape(label)}</th>' for _, label, n in columns)
    body = []
    for row in rows:
        cells = []
        for key, _, _ in columns:
            value = row.get(key)
            if key == "unit":
                cells.append(f'<td data-value="{value}"><a href="units/{value}.html">{value}</a></td>')
            else:
                cells.append(_cell(value))
        body.append(f'<tr data-role="{html.escape(str(row.get("role", "")))}" '
                    f'data-concept="{html.escape(str(row.get("concept") or ""))}" '
                    f'data-detector="{int(bool(row.get("detector")))}">' + "".join(cells) + "</tr>")
    options = "".join(f'<option value="{r}">{r}</option>' for r in roles)
    notes_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{notes_html}
<p>role <select id="role"><option value="">all</option>{options}</select>
concept <input id="concept" size="14"> <label><input type="checkbox" id="detectors"> detectors only</label>
&middot; <span id="shown"></span> of {len(rows)} units shown; click a column to sort</p>
<table id="units"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
<script>{SCRIPT}</script></body></html>"""


def svg_histogram(counts, top, threshold, width=320, height=90):
    counts = np.asarray(counts, dtype=float)
    scale = np.log1p(counts) / max(1e-9, np.log1p(counts).max())
    bar = width / len(counts)
    bars = "".join(f'<rect x="{i * bar:.1f}" y="{height - h * height:.1f}" width="{bar - 1:.1f}" '
                   f'height="{h * height:.1f}" fill="#4a7ab5"/>' for i, h in enumerate(scale))
    x = min(width, threshold / top * width) if top > 0 else 0
    return (f'<svg width="{width}" height="{height + 14}">{bars}<line x1="{x:.1f}" x2="{x:.1f}" y1="0" '
            f'y2="{height}" stroke="#c22" stroke-width="2"/><text x="0" y="{height + 12}" font-size="10">0</text>'
            f'<text x="{width - 40}" y="{height + 12}" font-size="10">{top:.3g}</text></svg>')


def svg_curve(accuracy, rank, width=320, height=90, label=""):
    points = " ".join(f"{i / (len(accuracy) - 1) * width:.1f},{height - a * height:.1f}"
                      for i, a in enumerate(accuracy))
    x = rank / (len(accuracy) - 1) * width
    return (f'<svg width="{width}" height="{height + 14}"><polyline points="{points}" fill="none" stroke="#222"/>'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" stroke="#e80" stroke-width="2"/>'
            f'<text x="0" y="{height + 12}" font-size="10">{html.escape(label)}: rank {rank}</text></svg>')


def unit_page(unit, layer, facts, strip_file, histogram_svg, curves_svg, concepts, formula_strip=None):
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    concept_rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{iou:.4f}</td></tr>" for c, iou in concepts)
    strip = f'<p class="strip"><img src="{strip_file}" alt="top images of unit {unit}"></p>' if strip_file else \
        "<p class=note>no dissection: no images</p>"
    if formula_strip:
        strip += (f'<h2>Where its formula holds on the same images, in blue</h2><p class="strip">'
                  f'<img src="{formula_strip}" alt="the formula of unit {unit} on its top images"></p>')
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>unit {unit}</title><style>{STYLE}</style>
</head><body><p><a href="../index.html">all units</a></p><h1>{html.escape(layer)} unit {unit}</h1>
<table>{rows}</table><h2>Top-activating probe images, the unit's mask in red</h2>{strip}
<h2>Activations over the probe set (log counts), threshold in red</h2>{histogram_svg}
<h2>Best concepts</h2><table>{concept_rows}</table>
<h2>Place on the ROF curves (accuracy against units retrieved)</h2>{curves_svg}</body></html>"""


def strip_image(images, masks, size, colour=(230, 30, 30)):
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

