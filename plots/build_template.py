"""Builds plots/template.html: DVC's plots page with vega, vega-lite and vega-embed inlined from
plots/vendor/, so `dvc plots show` / `dvc plots diff` pages render from file:// with no network.

DVC (dvc_render.html) fills the template by plain text replacement: `{plot_divs}` (required) receives
the plots, `{refresh_tag}` the auto-refresh tag; `{scripts}`, where DVC puts its CDN <script> links,
is left out on purpose. The scripts are inlined rather than linked because DVC writes the page where
`-o` says (dvc_plots/ by default), so no relative link to plots/vendor/ holds for every page.

Run: python plots/build_template.py  (or `make plots-template`)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor"
TEMPLATE = HERE / "template.html"
# vega-embed reads the globals `vega` and `vegaLite`, so the order matters
SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot (netunits)</title>
    <style>
        table { border-spacing: 15px; }
        body { font-family: sans-serif; }
    </style>
<!-- vega, vega-lite and vega-embed, inlined from plots/vendor/ (BSD-3-Clause; licences there) -->
{inline_scripts}
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def inline_script(name: str, source: str) -> str:
    """One bundle as an inline <script>, without its source-map comment (the map is not vendored)."""
    if re.search(r"</script", source, re.IGNORECASE):
        raise ValueError(f"{name} contains '</script', which would end the inline script early")
    for placeholder in DVC_PLACEHOLDERS:
        if placeholder in source:
            raise ValueError(f"{name} contains {placeholder}, which DVC would replace")
    source = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", source)
    return f'<script type="text/javascript" data-vendored="{name}">\n{source.rstrip()}\n</script>'


def template_html(vendor: Path = VENDOR) -> str:
    """The template's text from the vendored bundles."""
    scripts = "\n".join(inline_script(name, (vendor / name).read_text(encoding="utf-8")) for name in SCRIPTS)
    # replacement, not str.format: the page's CSS and DVC's placeholders hold braces
    return PAGE.replace("{inline_scripts}", scripts)


def main() -> int:
    TEMPLATE.write_text(template_html(), encoding="utf-8")
    print(f"wrote {TEMPLATE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
