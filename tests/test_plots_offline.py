"""The offline plots page: plots/template.html inlines the vendored vega, vega-lite and vega-embed,
the DVC config points at it, and `dvc plots show` / `dvc plots diff` pages render in headless
Chromium with the network cut off."""
import configparser
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, dvc, sh

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


def build_module():
    spec = importlib.util.spec_from_file_location("build_template", ROOT / "plots/build_template.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_template_is_built_from_the_vendored_bundles():
    template = (ROOT / "plots/template.html").read_text(encoding="utf-8")
    assert template == build_module().template_html(), "plots/template.html is stale: run `make plots-template`"
    assert "{plot_divs}" in template and "{scripts}" not in template      # no CDN links from DVC
    assert not re.search(r"<script[^>]*\bsrc=", template)
    for name in ("vega", "vega-lite", "vega-embed"):
        assert (ROOT / f"plots/vendor/{name}.min.js").is_file()
        assert "Redistribution and use" in (ROOT / f"plots/vendor/LICENSE-{name}").read_text()


def test_inline_script_refuses_what_would_break_the_page():
    module = build_module()
    assert module.inline_script("a.js", "x=1;\n//# sourceMappingURL=a.js.map\n").count("sourceMappingURL") == 0
    with pytest.raises(ValueError, match="</script"):
        module.inline_script("a.js", 'x="</SCRIPT>"')
    with pytest.raises(ValueError, match="plot_divs"):
        module.inline_script("a.js", 'x="{plot_divs}"')


def configured_template():
    """plots.html_template from the project's .dvc/config, as DVC resolves it (relative to .dvc/)."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    return config["plots"]["html_template"]


def test_dvc_config_names_the_template():
    assert (ROOT / ".dvc" / configured_template()).resolve() == (ROOT / "plots/template.html").resolve()
    assert "/dvc_plots/" in (ROOT / ".gitignore").read_text().splitlines()


def render(page: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium with every host unresolvable and a
    dead proxy, so a script that is not in the page cannot load."""
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
                             "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow   # four DVC commands and two browser runs: 5 s idle, 14 s on a busy 2-core machine
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium) to render the page")
def test_plots_show_and_diff_render_offline(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "plots", repo / "plots", ignore=shutil.ignore_patterns("__pycache__"))
    sh(repo, "git", "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    dvc(repo, "config", "plots.html_template", configured_template())
    (repo / "dvc.yaml").write_text(
        "plots:\n"
        "  - curve.csv:\n      x: n\n      y: accuracy\n      title: accuracy\n"
        "  - bars.csv:\n      template: bar_horizontal\n      x: units\n      y: role\n")
    (repo / "curve.csv").write_text("n,accuracy\n1,0.2\n2,0.6\n3,0.9\n")
    (repo / "bars.csv").write_text("role,units\nboth,5\nneither,2\n")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "plots")
    (repo / "curve.csv").write_text("n,accuracy\n1,0.3\n2,0.7\n3,0.95\n")

    dvc(repo, "plots", "show", "-o", "shown")
    dvc(repo, "plots", "diff", "HEAD", "-o", "diffed")
    for folder in ("shown", "diffed"):
        page = repo / folder / "index.html"
        html = page.read_text(encoding="utf-8")
        assert "cdn.jsdelivr" not in html and not re.search(r"<script[^>]*\bsrc=", html)
        dom = render(page)
        # vega-embed draws each plot on a canvas; a spec that failed to render leaves none
        assert dom.count("<canvas") == 2, (folder, dom[-3000:])
        assert dom.count('class="vega-embed') == 2
