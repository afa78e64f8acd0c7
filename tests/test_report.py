"""report: the unit explorer, from tables in memory and from the tiny run, checked as files and in a
real headless Chromium."""
import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch

from conftest import run_main
from netunits.api.report import (
    FeatureVis,
    MethodTable,
    ReportInputs,
    RunRecord,
    classes_text,
    formula_concepts,
    run_report,
)
from netunits.files import file_sha256, read_csv, write_csv
from netunits.report import curve_chart, histogram_chart, mark
from stages import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package chromium; "
                                                            ".ci/run installs it)")


def chromium(tmp_path, *args):
    """Run headless Chromium with a fresh profile; its stdout (the DOM for --dump-dom)."""
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def visible_units(dom):
    """Unit numbers of the index's rows that are not hidden, in page order."""
    return [int(u) for u, attrs in re.findall(r'<tr id="unit-(\d+)"([^>]*)>', dom) if "hidden" not in attrs]


# --------------------------------------------------------------------------------------------
# from tables in memory: three units, no files
# --------------------------------------------------------------------------------------------
def three_units(**changes):
    roles = {"unit": ["0", "1", "2"], "rank_train": ["2", "0", "1"], "rank_test": ["1", "0", "2"],
             "category_acc": ["both", "neither", "both"], "category_loss": ["both", "both", "train_only"]}
    influence = {"unit": ["0", "1", "2"], "category_acc": roles["category_acc"], "influential_for_k5": ["0", "0;3", ""]}
    clip = {"layer": ["layer4"] * 3, "unit": ["0", "1", "2"], "description": ["hole", "<script>x</script>", "holes_0"]}
    run = RunRecord("artifacts/train/model.pt", "ab" * 32, "resnet18", "params.yaml", ("train.seed=3",), "cd" * 32,
                    "Some CPU")
    values = dict(n_units=3, layer="layer4", run=run, notes=[], roles=roles,
                  curves={"train": [0.1, 0.5, 0.9, 1.0], "test": [0.1, 0.4, 0.8, 0.9]}, influence=influence,
                  clip=clip, tables=[MethodTable("rof", roles, "r.csv", "../../r.csv"),
                                     MethodTable("influence", influence, "i.csv", "../../i.csv"),
                                     MethodTable("clip_dissect", clip, "c.csv", "../../c.csv")])
    return ReportInputs(**{**values, **changes})


def test_classes_are_named_as_classes_and_formulas_split_into_concepts():
    assert classes_text("0") == "class 0" and classes_text("0 3") == "classes 0, 3" and classes_text("") == ""
    assert formula_concepts("(hole AND digit_0) AND NOT top_half") == ["hole", "digit_0", "top_half"]
    assert formula_concepts("thick CLOSE TO holes_1 OR x-X") == ["thick", "holes_1", "x-X"]


def test_run_report_from_tables_in_memory():
    result = run_report(three_units(), SimpleNamespace(thumbnail=112))
    assert result.rows == [
        {"unit": 0, "role": "both", "role_loss": "both", "rank_train": 2, "rank_test": 1, "classes": "0",
         "clip": "hole"},
        {"unit": 1, "role": "neither", "role_loss": "both", "rank_train": 0, "rank_test": 0, "classes": "0 3",
         "clip": "<script>x</script>"},
        {"unit": 2, "role": "both", "role_loss": "train_only", "rank_train": 1, "rank_test": 2, "classes": "",
         "clip": "holes_0"}]
    assert result.metrics["by_role"] == {"both": {"units": 2, "influential_share": 0.5},
                                         "train_only": {"units": 0}, "test_only": {"units": 0},
                                         "neither": {"units": 1, "influential_share": 1.0}}
    assert "spearman_l1_rank_train_vs_iou" not in result.metrics and result.layer == "layer4"
    index = result.files["index.html"]
    # autoescaped: a description is text, never markup
    assert "<script>x</script>" not in index and "&lt;script&gt;x&lt;/script&gt;" in index
    assert ">class 0<" in index and ">classes 0, 3<" in index and ">influential for classes<" in index
    # the run it shows
    assert "ab" * 32 in index and "cd" * 32 in index and "Some CPU" in index and "--set train.seed=3" in index
    assert '<script src="explorer.js"></script>' in index and "http" not in result.files["explorer.js"]
    # every unit's page links to its row in each method's table, and each table row back to the page
    page = result.files["units/1.html"]
    for key in ("rof", "influence", "clip_dissect"):
        assert f'href="../methods/{key}.html#unit-1"' in page
        assert '<tr id="unit-1"><td><a href="../units/1.html">1</a>' in result.files[f"methods/{key}.html"]
    assert 'href="../index.html#unit-1"' in page and '<tr id="unit-1"' in index
    assert "methods/compose.html" not in page and "units/1.png" not in result.files
    assert ">influential for classes</th><td>none<" in result.files["units/2.html"]
    # the ROF curves with axes and the unit's place: rank 0 enters at n = 1
    assert "units kept, in L1 order" in page and ">accuracy<" in page and "unit 1: n = 1" in page
    assert result.summary() == f"report: 3 units of layer4, {result.summary().split(', ')[1]}"


def evaluated_three_units():
    """three_units with evaluate's tables of layer4 for two methods and its metrics."""
    def table(answers, aucs, significant):
        return {"layer": ["layer4"] * 3, "unit": ["0", "1", "2"], "answer": answers,
                "fit_score": ["0.5", "0.25", "0.1"], "heldout_score": ["0.4", "0.2", "0.05"], "auc": aucs,
                "p_mannwhitney": ["1e-09", "0.01", "0.5"],
                "p_random_init": ["0.002", "0.04", "0.7"], "p_permuted_labels": ["0.001", "0.03", "0.9"],
                "significant": significant, "names_class": ["3", "", ""], "margin_effect": ["0.125", "", ""],
                "accuracy_effect": ["0.01", "", ""], "most_hurt": ["3", "", ""]}
    evaluation = {"clip_dissect": table(["hole", "<b>x</b>", "digit_3"], ["0.91", "0.66", "0.52"], ["1", "0", "0"]),
                  "invert": table(["hole AND digit_3", "left_half", ""], ["0.875", "0.7", "0.5"], ["1", "1", "0"])}
    entry = {"units": 3, "mean_heldout_auc": 0.6825, "null_mean_auc": {"random_init": 0.61, "permuted_labels": 0.5},
             "share_significant": {"random_init": 1 / 3, "permuted_labels": 2 / 3},
             "share_significant_every_null": 0.25}
    scoreboard = {"checkpoint_sha256": "ab" * 32, "fdr": 0.05, "nulls": ["random_init", "permuted_labels"],
                  "methods": {"clip_dissect": {"layer3": {**entry, "causal_agreement": None},
                                               "layer4": {**entry, "causal_agreement": 0.375, "class_answers": 8}},
                              "invert": {"layer4": entry}}}
    return three_units(evaluation=evaluation, scoreboard=scoreboard)


def test_evaluation_columns_marks_scoreboard_and_unit_tables_from_tables_in_memory():
    inputs = evaluated_three_units()
    result = run_report(inputs, SimpleNamespace(thumbnail=112))
    assert [row["clip_dissect_significant"] for row in result.rows] == [1, 0, 0]
    assert [row["clip_dissect_heldout_auc"] for row in result.rows] == [0.91, 0.66, 0.52]
    assert [row["invert"] for row in result.rows] == ["hole AND digit_3", "left_half", ""]
    assert [row["invert_significant"] for row in result.rows] == [1, 1, 0]
    # the CLIP columns right after CLIP-Dissect's answer, INVERT's last
    assert list(result.rows[0])[-6:] == ["clip", "clip_dissect_significant", "clip_dissect_heldout_auc", "invert",
                                         "invert_significant", "invert_heldout_auc"]
    assert result.metrics["by_role"]["both"]["invert_significant_share"] == 0.5
    assert result.metrics["by_role"]["neither"]["clip_dissect_significant_share"] == 0.0
    index = result.files["index.html"]
    # the mark, with the held-out AUC and p values in its title; sortable columns with their values
    assert ('<td data-value="1" class="mark" title="significant against every null network; evaluate&#39;s answer '
            'hole, held-out AUC 0.91; p: mannwhitney 1e-09, random init 0.002, permuted labels 0.001">\u2713</td>'
            in index)
    assert 'title="not significant; evaluate&#39;s answer &lt;b&gt;x&lt;/b&gt;, held-out AUC 0.66;' in index
    assert re.search(r'<th data-key="clip_dissect_heldout_auc" data-numeric="1"[^>]*>CLIP held-out AUC<', index)
    assert re.search(r'<th data-key="invert_significant" data-numeric="1"[^>]*>INVERT \u2713<', index)
    # the scoreboard: every method and layer of the metrics, its numbers as they are there
    board = index[index.index('id="scoreboard-table"'):index.index("</table>", index.index('id="scoreboard-table"'))]
    assert re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>", board) == [
        ("CLIP-Dissect", "layer3"), ("CLIP-Dissect", "layer4"), ("INVERT", "layer4")]
    values = [float(v) for v in re.findall(r'data-value="([^"]*)"', board)]
    entry = inputs.scoreboard["methods"]["invert"]["layer4"]
    assert values[-6:] == [entry["mean_heldout_auc"], *entry["null_mean_auc"].values(),
                           *entry["share_significant"].values(), entry["share_significant_every_null"]]
    assert ">37.5% of 8<" in board and "significant against the null networks" in index
    # the unit's page: a row per method, with the causal effect where evaluate measured one
    page = result.files["units/0.html"]
    assert "<th>margin drop when zeroed</th>" in page and "<th>p permuted labels</th>" in page
    assert ('<tr><td>INVERT</td><td>hole AND digit_3</td><td class="num">0.5</td><td class="num">0.4</td>'
            '<td class="num">0.875</td><td class="num">1e-09</td><td class="num">0.002</td><td class="num">0.001</td>'
            '<td class="num">yes</td><td class="num">3</td><td class="num">0.125</td>') in page
    assert "<td>INVERT</td><td>none</td>" in result.files["units/2.html"]
    # no evaluation: neither columns nor scoreboard
    plain = run_report(three_units(), SimpleNamespace(thumbnail=112))
    assert "scoreboard" not in plain.files["index.html"] and "evaluate" not in plain.files["units/0.html"]


def test_layer_roles_and_feature_visualization_from_tables_in_memory():
    layer_roles = {"layer_role_acc": ["test_only", "both", "both"], "layer_role_loss": ["both", "neither", "both"]}
    vis = FeatureVis({0: b"\x89PNG zero", 2: b"\x89PNG two"}, {0: 1.5, 2: 0.25}, "default, 2 of 3 units")
    result = run_report(three_units(layer_roles=layer_roles, featurevis=vis), SimpleNamespace(thumbnail=64))
    assert [row["layer_role_acc"] for row in result.rows] == ["test_only", "both", "both"]
    assert [row["layer_role_loss"] for row in result.rows] == ["both", "neither", "both"]
    assert [row["featurevis_activation"] for row in result.rows] == [1.5, "", 0.25]
    # the layer's roles right after the pooled units' ROF columns, in units.csv and on the index
    assert list(result.rows[0])[:7] == ["unit", "role", "role_loss", "rank_train", "rank_test", "layer_role_acc",
                                        "layer_role_loss"]
    index = result.files["index.html"]
    assert '<tr id="unit-0" data-role="both" data-layer-role="test_only"' in index
    assert '<select id="layer-role"><option value="">all</option>\n<option value="both">' in index
    assert '<option value="not computed">' not in index
    # a thumbnail where featurevis ran, linking to the page; a word where it did not
    assert ('<td data-value="1.5" class="thumb" title="feature visualization: mean activation 1.5"><a '
            'href="units/0.html"><img src="featurevis/0.png" alt="activation 1.5" loading="lazy"></a></td>') in index
    assert '<td data-value="">not selected</td>' in index
    assert result.files["featurevis/0.png"] == b"\x89PNG zero" and "featurevis/1.png" not in result.files
    page = result.files["units/0.html"]
    assert '<img src="../featurevis/0.png" width="64" height="64" alt="feature visualization of unit 0">' in page
    assert "reaching 1.5" in page and "<th>layer ROF role (accuracy)</th><td>test_only</td>" in page
    page = result.files["units/1.html"]
    assert "feature visualization not selected: featurevis.units visualized default, 2 of 3 units" in page
    assert "<img src=\"../featurevis" not in page
    # a unit silent on the starting image got no gradient: its page says why its image is grey
    silent = FeatureVis({1: b"\x89PNG one"}, {1: 0.0}, "list, 1 of 3 units")
    page = run_report(three_units(featurevis=silent), SimpleNamespace(thumbnail=64)).files["units/1.html"]
    assert "its activation stayed 0: the unit is silent on the starting image, so no gradient reached it" in page
    # the layer not computed by layer_rof: said in words, and a filter option of its own
    missing = {key: ["not computed"] * 3 for key in layer_roles}
    index = run_report(three_units(layer_roles=missing), SimpleNamespace(thumbnail=64)).files["index.html"]
    assert '<option value="not computed">not computed</option>' in index and ">not computed</td>" in index
    assert "featurevis" not in index


def test_curve_and_histogram_geometry():
    chart = mark(curve_chart([0.0, 0.5, 1.0], "train"), rank=0, unit=7)
    assert chart["points"] == f"{chart['left']:.1f},{chart['bottom']:.1f} " \
        f"{(chart['left'] + chart['right']) / 2:.1f},{(chart['top'] + chart['bottom']) / 2:.1f} " \
        f"{chart['right']:.1f},{chart['top']:.1f}"
    assert chart["marker"] == pytest.approx((chart["left"] + chart["right"]) / 2, abs=0.05)   # n = 1 of 2
    histogram = histogram_chart([0, 9, 999], top=2.0, threshold=1.0)
    assert [t["label"] for t in histogram["yticks"]] == ["0", "10", "100"]
    assert histogram["bars"][0]["h"] == 0 and histogram["bars"][2]["y"] == histogram["top"]
    assert histogram["marker"] == pytest.approx((histogram["left"] + histogram["right"]) / 2, abs=0.05)


# --------------------------------------------------------------------------------------------
# the stage on the tiny run
# --------------------------------------------------------------------------------------------
@pytest.fixture
def reported(project):
    """The tiny run's folder; its report is the one the tiny run made (with this code)."""
    return project


def test_index_unit_pages_metrics_and_size(reported, capsys):
    assert run_main(report.main) == 0
    assert capsys.readouterr().out.startswith("report: 512 units of layer4, ")
    index = (reported / "artifacts/report/index.html").read_text()
    assert len(re.findall(r'<tr id="unit-', index)) == 512
    pages = list((reported / "artifacts/report/units").glob("*.html"))
    strips = [p for p in (reported / "artifacts/report/units").glob("*.png") if not p.stem.endswith("_formula")]
    formula_strips = list((reported / "artifacts/report/units").glob("*_formula.png"))
    with_formula = sum(bool(f) for f in read_csv(reported / "artifacts/compose/formulas.csv", numeric=False)["formula"])
    assert len(pages) == 512 and len(strips) == 512 and len(formula_strips) == with_formula > 0
    page = reported / "artifacts/report/units" / (formula_strips[0].stem.removesuffix("_formula") + ".html")
    assert "Where its formula holds" in page.read_text()
    assert sum(f.stat().st_size for f in (reported / "artifacts/report").rglob("*") if f.is_file()) < 40 * 2**20
    # each method's own table, one anchored row per unit
    for key in ("rof", "dissection", "influence", "compose", "clip_dissect"):
        table = (reported / f"artifacts/report/methods/{key}.html").read_text()
        assert len(re.findall(r'<tr id="unit-\d+"><td><a href="../units/\d+.html">', table)) == 512
        assert f'href="../methods/{key}.html#unit-0"' in (reported / "artifacts/report/units/0.html").read_text()
    assert file_sha256(reported / "artifacts/train/model.pt") in index and "sha256 of the params in effect" in index
    metrics = json.loads((reported / "artifacts/metrics/report.json").read_text())
    roles = read_csv(reported / "artifacts/rof/unit_roles.csv", numeric=False)
    for role, entry in metrics["by_role"].items():
        assert entry["units"] == roles["category_acc"].count(role)
    assert -1 <= metrics["spearman_l1_rank_train_vs_iou"] <= 1
    assert not metrics["left_out"] and metrics["layer"] == "layer4"
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
    # evaluate's held-out AUC and significance of layer4, per method, and its scoreboard
    evaluation = json.loads((reported / "artifacts/metrics/evaluation.json").read_text())
    assert evaluation["checkpoint_sha256"] == file_sha256(reported / "artifacts/train/model.pt")
    for method in ("dissection", "formula", "clip_dissect", "invert"):
        table = read_csv(reported / f"artifacts/evaluation/{method}.csv", numeric=False)
        rows = [i for i, layer in enumerate(table["layer"]) if layer == "layer4"]
        assert [float(v) for v in units[f"{method}_heldout_auc"]] == [float(table["auc"][i]) for i in rows]
        assert units[f"{method}_significant"] == [table["significant"][i] for i in rows]
        assert f'data-key="{method}_significant"' in index
    board = index[index.index('id="scoreboard-table"'):]
    board = board[:board.index("</table>")]
    shown = re.findall(r'<tr><td>[^<]*</td><td>([^<]*)</td><td class="num">\d+</td>'
                       r'<td class="num" data-value="([^"]*)">', board)
    expected = [(layer, entry["mean_heldout_auc"]) for layers in evaluation["methods"].values()
                for layer, entry in layers.items()]
    assert [(layer, float(v)) for layer, v in shown] == expected
    for layers in evaluation["methods"].values():
        for entry in layers.values():
            assert f'data-value="{entry["share_significant_every_null"]}"' in board
            if entry.get("causal_agreement") is not None:
                assert f'data-value="{entry["causal_agreement"]}"' in board
    assert "<th>held-out AUC</th>" in (reported / "artifacts/report/units/0.html").read_text()


def write_layer4_roles(folder, n=512):
    """A layer_rof table of layer4 (the tiny run's layer4 is 1 x 1, which layer_rof refuses): the
    pooled units' roles shifted by one unit, so that they differ from them."""
    roles = read_csv(folder / "artifacts/rof/unit_roles.csv", numeric=False)
    shifted = {key: roles[key][1:] + roles[key][:1] for key in ("category_acc", "category_loss")}
    write_csv([{"unit": u, "category_acc": shifted["category_acc"][u], "category_loss": shifted["category_loss"][u]}
               for u in range(n)], folder / "artifacts/layer_rof/layer4_roles.csv")
    return shifted


def test_layer_roles_and_feature_visualizations_of_the_tiny_run(reported):
    units = read_csv(reported / "artifacts/units.csv", numeric=False)
    # the tiny run's layer_rof lists layer3 only: layer4's own roles are said to be not computed
    assert set(units["layer_role_acc"]) == {"not computed"} == set(units["layer_role_loss"])
    index = (reported / "artifacts/report/index.html").read_text()
    assert index.count('data-layer-role="not computed"') == 512
    table = read_csv(reported / "artifacts/featurevis/units.csv", numeric=False)
    selected = [int(u) for u in table["unit"]]
    assert [u for u, v in enumerate(units["featurevis_activation"]) if v] == selected and len(selected) == 6
    assert [float(units["featurevis_activation"][u]) for u in selected] == [float(v) for v in table["activation"]]
    assert len(re.findall(r'<img src="featurevis/\d+.png"', index)) == 6 and index.count(">not selected</td>") == 506
    for u in selected:
        site = reported / f"artifacts/report/featurevis/{u}.png"
        assert site.read_bytes() == (reported / f"artifacts/featurevis/layer4/{u}.png").read_bytes()
        assert f'<img src="../featurevis/{u}.png"' in (reported / f"artifacts/report/units/{u}.html").read_text()
    other = next(u for u in range(512) if u not in selected)
    assert "feature visualization not selected: featurevis.units visualized default, 6 of 512 units" in \
        (reported / f"artifacts/report/units/{other}.html").read_text()
    # a layer_rof table of layer4 joins every unit's row and page
    shifted = write_layer4_roles(reported)
    assert run_main(report.main) == 0
    units = read_csv(reported / "artifacts/units.csv", numeric=False)
    assert units["layer_role_acc"] == shifted["category_acc"] and units["layer_role_loss"] == shifted["category_loss"]
    assert f"<th>layer ROF role (loss)</th><td>{shifted['category_loss'][7]}</td>" in \
        (reported / "artifacts/report/units/7.html").read_text()
    # one of another size is named, and the roles are said to be not computed
    write_layer4_roles(reported, n=10)
    assert run_main(report.main) == 0
    index = (reported / "artifacts/report/index.html").read_text()
    assert ("ROF roles at layer4 (layer_rof) left out: artifacts/layer_rof/layer4_roles.csv: not a role per channel "
            "for the 512 channels of layer4; rerun `dvc repro layer_rof`") in index
    assert set(read_csv(reported / "artifacts/units.csv", numeric=False)["layer_role_acc"]) == {"not computed"}
    # feature visualizations of another checkpoint are left out, with a note
    metrics = reported / "artifacts/metrics/featurevis.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "checkpoint_sha256": "0" * 64}))
    assert run_main(report.main) == 0
    index = (reported / "artifacts/report/index.html").read_text()
    assert ("feature visualization left out: artifacts/metrics/featurevis.json: made from another checkpoint than "
            "artifacts/train/model.pt; rerun `dvc repro featurevis`") in index
    assert "featurevis_activation" not in index and not (reported / "artifacts/report/featurevis").exists()


def test_a_missing_method_or_another_checkpoint_leaves_its_columns_out(reported):
    (reported / "artifacts/influence/units.csv").unlink()
    (reported / "artifacts/clip_dissect/layers/layer4.csv").unlink()
    formulas = (reported / "artifacts/compose/formulas.csv").read_text().splitlines()
    (reported / "artifacts/compose/formulas.csv").write_text("\n".join(formulas[:100]) + "\n")
    tallies = torch.load(reported / "artifacts/dissect/tallies.pt", weights_only=True)
    tallies["checkpoint_sha256"] = "0" * 64
    torch.save(tallies, reported / "artifacts/dissect/tallies.pt")
    assert run_main(report.main, "--set", "report.thumbnail=32") == 0
    index = (reported / "artifacts/report/index.html").read_text()
    assert "influential filters left out: artifacts/influence/units.csv: file not found" in index
    assert "network dissection left out: artifacts/dissect/tallies.pt: made from another checkpoint" in index
    assert "CLIP-Dissect left out: artifacts/clip_dissect/layers/layer4.csv: file not found" in index
    assert "compositional explanations left out: formulas.csv has no row for each of the 512 units" in index
    assert ">IoU<" not in index and ">influential for classes<" not in index and ">role (accuracy)<" in index
    headings = re.findall(r"<th [^>]*>([^<]*)<", index)
    assert "formula" not in headings and "CLIP-Dissect" not in headings and "concept" not in headings
    assert not list((reported / "artifacts/report/units").glob("*.png"))
    assert [p.name for p in (reported / "artifacts/report/methods").iterdir()] == ["rof.html"]


def test_a_missing_evaluation_or_another_checkpoints_leaves_its_columns_out(reported):
    metrics = reported / "artifacts/metrics/evaluation.json"
    evaluation = json.loads(metrics.read_text())
    metrics.unlink()
    assert run_main(report.main, "--set", "report.thumbnail=32") == 0
    index = (reported / "artifacts/report/index.html").read_text()
    assert ("evaluation (held-out AUC, significance, scoreboard) left out: artifacts/metrics/evaluation.json: "
            "file not found") in index
    assert "scoreboard-table" not in index and "_significant" not in index and ">concept<" in index
    units = read_csv(reported / "artifacts/units.csv", numeric=False)
    assert not [key for key in units if key.endswith(("_significant", "_heldout_auc")) or key == "invert"]
    # made from another checkpoint
    metrics.write_text(json.dumps({**evaluation, "checkpoint_sha256": "0" * 64}))
    assert run_main(report.main, "--set", "report.thumbnail=32") == 0
    index = (reported / "artifacts/report/index.html").read_text()
    assert ("evaluation (held-out AUC, significance, scoreboard) left out: artifacts/metrics/evaluation.json: "
            "made from another checkpoint than artifacts/train/model.pt") in index
    assert "scoreboard-table" not in index and "_heldout_auc" not in index
    # the right checkpoint, one method's table gone: that method alone is left out
    metrics.write_text(json.dumps(evaluation))
    (reported / "artifacts/evaluation/invert.csv").unlink()
    assert run_main(report.main, "--set", "report.thumbnail=32") == 0
    index = (reported / "artifacts/report/index.html").read_text()
    assert "evaluation of INVERT left out: artifacts/evaluation/invert.csv: file not found" in index
    assert "scoreboard-table" in index and 'data-key="invert_significant"' not in index
    assert 'data-key="dissection_significant"' in index


def test_a_corrupt_checkpoint_is_named_and_every_column_from_it_left_out(reported, capsys):
    model = reported / "artifacts/train/model.pt"
    model.write_bytes(model.read_bytes()[:1000])                     # truncated
    assert run_main(report.main, "--set", "report.thumbnail=32") == 0
    # the console: the summary, then the note whole, torch's reason a complete sentence
    out = capsys.readouterr().out.splitlines()
    assert re.match(r"report: \d+ units of an unknown layer, [\d.]+ MiB of pages and images$", out[0]) and len(out) == 2
    assert out[1].startswith("checkpoint unreadable, so every column computed from it is left out (ROF roles")
    assert out[1].endswith("artifacts/train/model.pt: corrupt or not a model checkpoint (PytorchStreamReader failed "
                           "reading zip archive: failed finding central directory.); restore it with `dvc checkout "
                           "artifacts/train/model.pt` or rebuild it with `dvc repro -f`")
    index = (reported / "artifacts/report/index.html").read_text()
    assert "checkpoint unreadable, so every column computed from it is left out" in index
    assert "artifacts/train/model.pt: corrupt or not a model checkpoint" in index
    assert "another checkpoint" not in index
    assert re.findall(r"<th [^>]*>([^<]*)<", index) == ["unit"]
    assert read_csv(reported / "artifacts/units.csv", numeric=False) == {"unit": [str(u) for u in range(512)]}
    metrics = json.loads((reported / "artifacts/metrics/report.json").read_text())
    assert metrics["by_role"] == {} and metrics["layer"] is None and len(metrics["left_out"]) == 1
    assert not (reported / "artifacts/report/methods").exists()
    assert not list((reported / "artifacts/report/units").glob("*.png"))


@needs_chromium
def test_the_report_in_headless_chromium(reported, tmp_path):
    index = reported / "artifacts/report/index.html"
    units = read_csv(reported / "artifacts/units.csv", numeric=False)
    roles = units["role"]
    dom = chromium(tmp_path, "--dump-dom", index.as_uri())
    assert visible_units(dom) == list(range(512)) and '<span id="shown">512</span>' in dom
    for role in ("test_only", "neither"):
        dom = chromium(tmp_path, "--dump-dom", index.as_uri() + f"#role={role}")
        assert visible_units(dom) == [u for u, r in enumerate(roles) if r == role]
        assert f'<span id="shown">{roles.count(role)}</span>' in dom
    # an unknown role is named, and no unit has it
    dom = chromium(tmp_path, "--dump-dom", index.as_uri() + "#role=tset_only")
    assert visible_units(dom) == [] and 'the link asks for role "tset_only", which no unit has' in dom
    assert re.search(r'<p class="note" id="linkerror">[^<]*tset_only', dom)
    # concepts match exactly unless asked for substrings
    name = units["concept"][0]
    prefix = name[:-1]
    dom = chromium(tmp_path, "--dump-dom", index.as_uri() + f"#concept={name}")
    assert visible_units(dom) == [u for u, c in enumerate(units["concept"]) if c == name]
    dom = chromium(tmp_path, "--dump-dom", index.as_uri() + f"#concept={prefix}")
    assert visible_units(dom) == [u for u, c in enumerate(units["concept"]) if c == prefix]
    dom = chromium(tmp_path, "--dump-dom", index.as_uri() + f"#concept={prefix}&match=substring&in=formula")
    assert visible_units(dom) == [u for u, f in enumerate(units["formula"])
                                  if any(prefix in c for c in formula_concepts(f))]
    # sorted by a link, with the direction shown
    dom = chromium(tmp_path, "--dump-dom", index.as_uri() + "#sort=iou&order=desc")
    ious = [float(units["iou"][u]) for u in visible_units(dom)]
    assert ious == sorted(ious, reverse=True) and len(ious) == 512
    assert re.search(r'<th data-key="iou"[^>]*aria-sort="descending"[^>]*>IoU<span class="arrow">\u25BC</span>', dom)
    unit_page = reported / "artifacts/report/units/0.html"
    dom = chromium(tmp_path, "--dump-dom", unit_page.as_uri())
    assert '<img src="0.png"' in dom and (unit_page.parent / "0.png").stat().st_size > 0
    # the layer's own ROF role filters like the pooled units' role; the page shows the visualization
    shifted = write_layer4_roles(reported)["category_acc"]
    assert run_main(report.main) == 0
    dom = chromium(tmp_path, "--dump-dom", index.as_uri() + "#layer_role=neither&role=both")
    assert visible_units(dom) == [u for u in range(512) if shifted[u] == "neither" and roles[u] == "both"]
    dom = chromium(tmp_path, "--dump-dom", index.as_uri() + "#layer_role=nether")
    assert visible_units(dom) == [] and 'the link asks for layer ROF role "nether", which no unit has' in dom
    unit = read_csv(reported / "artifacts/featurevis/units.csv", numeric=False)["unit"][0]
    dom = chromium(tmp_path, "--dump-dom", (reported / f"artifacts/report/units/{unit}.html").as_uri())
    assert f'<img src="../featurevis/{unit}.png"' in dom
    screenshot = tmp_path / "index.png"
    chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1200,900", index.as_uri())
    assert screenshot.read_bytes().startswith(b"\x89PNG")
