"""The generalization study: correlations by hand, and a tiny 2 x 2 grid of the pipeline's own
stages through DVC."""
import json
import math

import pytest
import yaml

from conftest import ROOT, dvc, scratch_repo, stages_run
from netunits.study import average_ranks, pearson, spearman, summary_row


def test_correlations_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 2, 3], [5, 5, 5]))  # undefined for a constant side
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear
    # Spearman of x and y = 1, 3, 2: ranks 1,2,3 and 1,3,2 -> 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_summary_row_reads_the_chosen_turning_points():
    counts = {"both_ratio": 0.5, "train_only_ratio": 0.25, "test_only_ratio": 0.125, "neither_ratio": 0.125}
    subset = {"full_accuracy": 0.75, "n0_acc": 10, "n0_loss": 11, "n0_acc_tol": 7, "n0_loss_tol": 8}
    metrics = {"train": subset, "test": {**subset, "full_accuracy": 0.5},
               "taxonomy": {d: {m: counts for m in ("acc", "loss")} for d in ("exact", "tolerance")}}
    row = summary_row(0.2, 1, metrics, "tolerance")
    assert row["generalization_gap"] == 0.25 and row["n0_acc_train"] == 7 and row["n0_loss_test"] == 8
    assert summary_row(0.2, 1, metrics, "exact")["n0_acc_train"] == 10 and row["test_only_ratio_acc"] == 0.125


def tiny_study(seeds):
    params = yaml.safe_load((ROOT / "study/params.yaml").read_text())
    params["grid"] = {"label_noise": [0.0, 0.6], "seeds": seeds}
    params["data"].update(train_size=200, test_size=100)
    params["train"].update(epochs=2, batch_size=50, eval_batch_size=100)
    params["extract_features"].update(batch_size=100)
    return params


@pytest.mark.slow
def test_tiny_grid_runs_the_pipeline_stages_through_dvc(tmp_path):
    repo = scratch_repo(tmp_path, study_params=tiny_study([0, 1]))
    ran = stages_run(dvc(repo, "repro", "study/dvc.yaml").stdout)
    cells = [f"{n}-{s}" for n in ("0.0", "0.6") for s in (0, 1)]
    assert sorted(ran) == sorted([f"{stage}@{cell}" for stage in ("prepare_data", "train", "extract_features",
                                                                  "rof_sweep") for cell in cells] +
                                 ["aggregate", "check_params"])
    noisy = json.loads((repo / "artifacts/study/runs/noise0.6_seed1/artifacts/metrics/rof.json").read_text())
    assert noisy["train"]["labels_changed"] == 120 and "labels_changed" not in noisy["test"]
    rows = (repo / "artifacts/study/summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("label_noise,seed,train_accuracy,test_accuracy,generalization_gap")
    metrics = json.loads((repo / "artifacts/metrics/study.json").read_text())
    assert metrics["n_runs"] == 4 and set(metrics["acc"]) == {"both", "train_only", "test_only", "neither"}
    assert "| 0.6 | 2 |" in (repo / "artifacts/study/summary.md").read_text()
    assert (repo / "artifacts/study/ratios_vs_gap.png").stat().st_size > 0
    # adding a seed runs only the new cells and the aggregation (after the check of the file)
    (repo / "study/params.yaml").write_text(yaml.safe_dump(tiny_study([0, 1, 2]), sort_keys=False))
    ran = stages_run(dvc(repo, "repro", "study/dvc.yaml").stdout)
    assert sorted(ran) == sorted([f"{stage}@{n}-2" for stage in ("prepare_data", "train", "extract_features",
                                                                 "rof_sweep") for n in ("0.0", "0.6")] +
                                 ["aggregate", "check_params"])
    # a rof param reruns every cell's rof_sweep and the aggregation, nothing upstream
    params = tiny_study([0, 1, 2])
    params["rof"]["acc_tolerance"] = 0.02
    (repo / "study/params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = stages_run(dvc(repo, "repro", "study/dvc.yaml").stdout)
    assert sorted(name for name in ran if name not in ("aggregate", "check_params")) == sorted(
        f"rof_sweep@{n}-{s}" for n in ("0.0", "0.6") for s in (0, 1, 2))
    # a rejected grid value stops the run at the check, before DVC removes any cell's outputs
    params["grid"]["label_noise"] = [0.0, 0.95]
    (repo / "study/params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    checkpoint = (repo / "artifacts/study/runs/noise0.6_seed1/artifacts/train/model.pt").read_bytes()
    result = dvc(repo, "repro", "study/dvc.yaml", check=False)
    assert result.returncode != 0 and stages_run(result.stdout) == ["check_params"]
    assert "error: study/params.yaml: 'grid.label_noise' is [0.0, 0.95]; it must be a non-empty list" in result.stderr
    assert (repo / "artifacts/study/runs/noise0.6_seed1/artifacts/train/model.pt").read_bytes() == checkpoint
