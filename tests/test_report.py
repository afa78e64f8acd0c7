"""report: the unit explorer from the tiny run, checked as files and in a real headless Chromium."""
import json
import re
import shutil
import subprocess

import pytest
import torch

from conftest import run_main
from netunits.files import read_csv
from stages import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(tmp_path, *args):
    """Run headless Chromium with a fresh profile; its stdout (the DOM for --dump-dom)."""
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def reported(project):
    assert run_main(report.main) == 0
    return project


def test_index_unit_pages_metrics_and_size(reported):
    index = (reported / "artifacts/report/index.html").read_text()
    assert len(re.findall(r"<tr data-role=", index)) == 512
    assert "<script>" in index and "http" not in index.split("<script>")[1]      # nothing fetched
    pages = list((reported / "artifacts/report/units").glob("*.html"))
    strips = [p for p in (reported / "artifacts/report/units").glob("*.png") if not p.stem.endswith("_formula")]
    formula_strips = list((reported / "artifacts/report/units").glob("*_formula.png"))
    with_formula = sum(bool(f) for f in read_csv(reported / "artifacts/compose/formulas.csv", numeric=False)["formula"])
    assert len(pages) == 512 and len(strips) == 512 and len(formula_strips) == with_formula > 0
    page = reported / "artifacts/report/units" / (formula_strips[0].stem.removesuffix("_formula") + ".html")
    assert "Where its formula holds" in page.read_text()
    assert sum(f.stat().st_size for f in (reported / "artifacts/report").rglob("*") if f.is_file()) < 30 * 2**20
    metrics = json.loads((reported / "artifacts/metrics/report.json").read_text())
    roles = read_csv(reported / "artifacts/rof/unit_roles.csv", numeric=False)
    for role, entry in metrics["by_role"].items():
        assert entry["units"] == roles["category_acc"].count(role)
    assert -1 <= metrics["spearman_l1_rank_train_vs_iou"] <= 1
    assert not metrics["left_out"]
    # the per-unit table: every method's answer, from its own output
    units = read_csv(reported / "artifacts/units.csv", numeric=False)
    formulas = read_csv(reported / "artifacts/compose/formulas.csv", numeric=False)
    clip = read_csv(reported / "artifacts/clip_dissect/layers/layer4.csv", numeric=False)
    concepts = read_csv(reported / "artifacts/dissect/layers/layer4.csv", numeric=False)
    assert units["unit"] == [str(u) for u in range(512)] and units["role"] == roles["category_acc"]
    assert units["formula"] == formulas["formula"] and units["clip"] == clip["description"]
    assert units["concept"] == concepts["concept"]
    assert ">formula<" in index and ">CLIP-Dissect<" in index
    for role, entry in metrics["by_role"].items():
        members = [float(f) for f, r in zip(units["formula_iou"], units["role"]) if r == role]
        assert entry.get("mean_formula_iou") == (pytest.approx(sum(members) / len(members)) if members else None)


def test_a_missing_method_or_another_checkpoint_leaves_its_columns_out(reported):
    (reported / "artifacts/influence/units.csv").unlink()
    (reported / "artifacts/clip_dissect/layers/layer4.csv").unlink()
    formulas = (reported / "artifacts/compose/formulas.csv").read_text().splitlines()
    (reported / "artifacts/compose/formulas.csv").write_text("\n".join(formulas[:100]) + "\n")
    tallies = torch.load(reported / "artifacts/dissect/tallies.pt", weights_only=True)
    tallies["checkpoint_sha256"] = "0" * 64
    torch.save(tallies, reported / "artifacts/dissect/tallies.pt")
    assert run_main(report.main) == 0
    index = (reported / "artifacts/report/index.html").read_text()
    assert "influential filters left out: artifacts/influence/units.csv: file not found" in index
    assert "network dissection left out: artifacts/dissect/tallies.pt: made from another checkpoint" in index
    assert "CLIP-Dissect left out: artifacts/clip_dissect/layers/layer4.csv: file not found" in index
    assert "compositional explanations left out: formulas.csv has no row for each of the 512 units" in index
    assert ">IoU<" not in index and ">influential for<" not in index and ">role (accuracy)<" in index
    assert ">formula<" not in index and ">CLIP-Dissect<" not in index
    assert not list((reported / "artifacts/report/units").glob("*.png"))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package chromium; .ci/run "
                                             "installs it)")
def test_the_report_in_headless_chromium(reported, tmp_path):
    index = reported / "artifacts/report/index.html"
    roles = read_csv(reported / "artifacts/rof/unit_roles.csv", numeric=False)["category_acc"]
    dom = chromium(tmp_path, "--dump-dom", index.as_uri())
    rows = re.findall(r"<tr data-role=[^>]*>", dom)
    assert len(rows) == 512 and not any("hidden" in r for r in rows)
    for role in ("test_only", "neither"):
        dom = chromium(tmp_path, "--dump-dom", index.as_uri() + f"#role={role}")
        visible = [r for r in re.findall(r"<tr data-role=[^>]*>", dom) if "hidden" not in r]
        assert len(visible) == roles.count(role) and all(f'data-role="{role}"' in r for r in visible)
        assert f'<span id="shown">{roles.count(role)}</span>' in dom
    unit_page = reported / "artifacts/report/units/0.html"
    dom = chromium(tmp_path, "--dump-dom", unit_page.as_uri())
    assert '<img src="0.png"' in dom and (unit_page.parent / "0.png").stat().st_size > 0
    screenshot = tmp_path / "index.png"
    chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1200,900", index.as_uri())
    assert screenshot.read_bytes().startswith(b"\x89PNG")
