"""netunits.summary: artifacts/summary.md holds the metrics files' values, and a missing or
unreadable metrics file is named with the command that makes it."""
import json

import pytest

from netunits import summary

ROLES = {"both": 7, "train_only": 1, "test_only": 2, "neither": 0}
METRICS = {
    "train": {"baseline_accuracy": 0.8125, "baseline_loss": 0.5, "final_train_loss": 0.25},
    "rof": {"train": {"n0_acc": 9, "n0_loss": 10, "n0_acc_tol": 6, "n0_loss_tol": 8, "full_accuracy": 0.875},
            "test": {"n0_acc": 8, "n0_loss": 10, "n0_acc_tol": 5, "n0_loss_tol": 7, "full_accuracy": 0.8125},
            "taxonomy": {d: {m: {**ROLES, "degenerate": d == "exact" and m == "loss"} for m in ("acc", "loss")}
                         for d in ("exact", "tolerance")}},
    "dissect": {"iou_threshold": 0.04,
                "layers": {"layer3": {"units": 4, "detectors": 0, "unique_concepts": 0, "mean_best_iou": 0.01},
                           "layer4": {"units": 10, "detectors": 3, "unique_concepts": 2, "mean_best_iou": 0.03}},
                "overall": {"units": 14, "detectors": 3, "unique_concepts": 2, "mean_best_iou": 0.0214}},
    "compose": {"layers": {"layer4": {"units": 10, "mean_iou": 0.0625, "mean_single_iou": 0.03,
                                      "formulas_by_length": {"1": 0, "2": 1, "3": 9}, "unique_formulas": 6}}},
    "clip_dissect": {"source": "annotations", "concepts": 5,
                     "layers": {"layer4": {"units": 10, "unique_descriptions": 4}},
                     "overall": {"units": 10, "unique_descriptions": 4, "agreement_with_dissection": 0.2,
                                 "chance_agreement": 0.05}},
    "influence": {"n_units": 10, "accuracy_full": 0.8125,
                  "by_k": {"10": {"accuracy_decomposed": 0.75, "units_in_some_set": 9},
                           "2": {"accuracy_decomposed": 0.5, "units_in_some_set": 3}}},
    "layer_rof": {"layers": {"layer3": {"n_channels": 16, "train": {"n0_acc_tol": 12}, "test": {"n0_acc_tol": 14},
                                        "roles": {"acc": ROLES}}}},
    "finetune": {"k": 5, "epochs": 1, "accuracy_before": 0.75, "accuracy_after": 0.875, "accuracy_full": 0.8125},
    "evaluation": {"nulls": ["random_init", "permuted_labels"],
                   "methods": {"formula": {"layer4": {
                       "mean_heldout_auc": 0.75, "share_significant": {"random_init": 0.1, "permuted_labels": 0.5},
                       "share_significant_every_null": 0.1, "causal_agreement": 0.6, "class_answers": 5}}},
                   "planted": {"layer": "layer4", "units": ["hole", "noise"],
                               "methods": {"dissection": {"recovered": ["hole"], "expressible": 1,
                                                          "noise_significant_mannwhitney": [False]}}}},
    "compare": {"networks": {"trained seed 0": {"test_accuracy": 0.875, "layers": {
                    "layer4": {"significant": 7, "significant_concepts": 3, "beats_random": 4, "detectors": 2}}},
                             "random init 0": {"test_accuracy": None, "layers": {
                    "layer4": {"significant": 1, "significant_concepts": 1, "beats_random": 0, "detectors": 0}}}},
                "seeds": {"networks": ["trained seed 0", "trained seed 1"],
                          "layers": {"layer4": {"beats_random": [4, 2], "stable_beats_random_concepts": ["hole"]}}}},
    "report": {"left_out": [], "spearman_l1_rank_train_vs_iou": -0.25,
               "by_role": {"both": {"units": 7, "detector_share": 0.0, "influential_share": 0.5,
                                    "mean_formula_iou": 0.0625},
                           "neither": {"units": 0, "detector_share": None, "influential_share": None,
                                       "mean_formula_iou": None}}},
}


@pytest.fixture
def metrics_dir(tmp_path):
    folder = tmp_path / "artifacts/metrics"
    folder.mkdir(parents=True)
    for name, value in METRICS.items():
        (folder / f"{name}.json").write_text(json.dumps(value))
    return folder


def row(text, name):
    """The value cell of the row named `name`."""
    cells = [line.split(" | ") for line in text.splitlines() if line.startswith(f"| {name} | ")]
    assert len(cells) == 1, (name, text)
    return cells[0][1].rstrip(" |")


def test_the_summary_holds_the_metrics_values(metrics_dir):
    text = summary.summary_markdown(metrics_dir)
    assert row(text, "test accuracy (all units)") == "0.8125"
    assert row(text, "n0 on train: by accuracy exact / tolerance") == "9 / 6 (accuracy with every unit 0.8750)"
    assert row(text, "n0 on test: by loss exact / tolerance") == "10 / 7"
    assert row(text, "roles (tolerance, by acc): both / train_only / test_only / neither") == "7 / 1 / 2 / 0"
    degenerate = row(text, "roles (exact, by loss): both / train_only / test_only / neither")
    assert degenerate == "7 / 1 / 2 / 0 (degenerate: a U0 holds every unit or none)"
    assert row(text, "detectors per layer (best IoU at or above 0.04)") == "layer3 0 of 4, layer4 3 of 10"
    assert row(text, "layer4: mean formula IoU (best single concept's)") == "0.0625 (0.0300)"
    assert row(text, "layer4: unique formulas") == "6 of 10 units (lengths up to 3)"
    assert row(text, "unique descriptions per layer (5 concepts, annotations)") == "layer4 4 of 10"
    assert row(text, "decomposed accuracy, k = 2 / 10") == "0.500 / 0.750"       # ordered by k, not as text
    shares = "detector share / influential share / mean formula IoU"
    assert row(text, f"both (7 units): {shares}") == "0.000 / 0.500 / 0.0625"
    assert row(text, f"neither (0 units): {shares}") == "n/a / n/a / n/a"
    assert row(text, "Spearman: L1 rank on train vs best IoU") == "-0.250"
    assert row(text, "layer3: n0 by accuracy (tolerance) train / test, of 16 channels") == "12 / 14"
    assert row(text, "decomposed network (k = 5): test accuracy before / after 1 epoch") == \
        "0.750 / 0.875 (full network 0.812)"
    nulls = "random_init / permuted_labels / every null"
    assert row(text, f"formula layer4: mean held-out AUC / share significant against {nulls}") == \
        "0.750 / 0.100 / 0.500 / 0.100 (causal agreement 0.60 of 5)"
    assert row(text, "planted units on layer4 (hole, noise): recovered of expressible") == "dissection 1 of 1"
    assert row(text, "planted noise unit significant (held-out Mann-Whitney, BH)") == "dissection no"
    per_layer = ("test accuracy; per layer significant answers (distinct concepts), answers beating the random "
                 "network, detectors")
    assert row(text, f"trained seed 0: {per_layer}") == "0.875; layer4 7 (3), 4, 2"
    assert row(text, f"random init 0: {per_layer}") == "n/a; layer4 1 (1), 0, 0"
    assert row(text, "layer4 over 2 seeds: answers beating the random network; concepts doing so in every seed") \
        == "4 / 2; hole"


def test_a_missing_or_broken_file_is_named_with_its_command(metrics_dir):
    (metrics_dir / "compose.json").unlink()
    (metrics_dir / "influence.json").write_text("{not json")
    (metrics_dir / "train.json").write_text(json.dumps({k: v for k, v in METRICS["train"].items()
                                                        if k != "baseline_loss"}))
    text = summary.summary_markdown(metrics_dir)
    assert f"Missing: `{metrics_dir}/compose.json`; run `dvc repro compose` to make it." in text
    assert f"Unreadable: `{metrics_dir}/influence.json`" in text and "run `dvc repro influential_filters`" in text
    assert "lacks what this summary reads (KeyError: 'baseline_loss'); run `dvc repro train_log`" in text
    assert row(text, "unique descriptions per layer (5 concepts, annotations)") == "layer4 4 of 10"   # the rest stays
    assert summary.missing_files(metrics_dir) == [metrics_dir / "compose.json"]


def test_main_writes_the_page(metrics_dir, tmp_path, capsys):
    output = tmp_path / "out/summary.md"
    assert summary.main(["--metrics-dir", str(metrics_dir), "--output", str(output)]) == 0
    assert output.read_text() == summary.summary_markdown(metrics_dir)
    captured = capsys.readouterr()
    assert captured.out == output.read_text() and captured.err == f"wrote {output}\n"
    (metrics_dir / "report.json").unlink()
    assert summary.main(["--metrics-dir", str(metrics_dir), "--output", str(output)]) == 0
    assert capsys.readouterr().err == f"wrote {output} (1 metrics files missing: report.json)\n"
