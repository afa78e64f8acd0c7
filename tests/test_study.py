"""The generalization study: label noise, correlations, and a tiny 2 x 2 grid through DVC."""
import json
import math
import shutil

import pytest
import torch
import yaml

from conftest import ROOT
from stages.study_aggregate import average_ranks, pearson, spearman
from stages.study_run import STUDY_SCHEMA, corrupt_labels
from stages.common import PipelineError, validate_params
from test_pipeline import dvc, sh, stages_run


def test_label_noise_replaces_the_asked_share_with_wrong_labels():
    labels = torch.arange(1000) % 10
    noisy, changed = corrupt_labels(labels, 0.4, seed=3)
    assert int(changed.sum()) == 400
    assert (noisy[changed] != labels[changed]).all() and torch.equal(noisy[~changed], labels[~changed])
    assert noisy.min() >= 0 and noisy.max() <= 9
    again, _ = corrupt_labels(labels, 0.4, seed=3)
    assert torch.equal(noisy, again) and not torch.equal(noisy, corrupt_labels(labels, 0.4, seed=4)[0])
    assert torch.equal(corrupt_labels(labels, 0.0, seed=3)[0], labels)
    # the wrong label is uniform over the other nine classes
    offsets = ((noisy - labels) % 10)[changed]
    assert set(offsets.tolist()) == set(range(1, 10))


def test_correlations_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 2, 3], [5, 5, 5]))  # undefined for a constant side
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear
    # Spearman of x and y = 1, 3, 2: ranks 1,2,3 and 1,3,2 -> 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_study_params_are_validated():
    params = yaml.safe_load((ROOT / "study/params.yaml").read_text())
    validate_params(params, STUDY_SCHEMA)
    validate_params(yaml.safe_load((ROOT / "study/profiles/gpu.yaml").read_text()), STUDY_SCHEMA)
    params["grid"]["label_noise"] = [0.0, 1.2]
    with pytest.raises(PipelineError, match=r"'grid.label_noise' is \[0.0, 1.2\]; it must be a non-empty list "
                                            r"of distinct values, each a number in \[0, 0.9\]"):
        validate_params(params, STUDY_SCHEMA)


TINY_STUDY = {
    "grid": {"label_noise": [0.0, 0.6], "seeds": [0, 1]},
    "run": {"train_size": 200, "test_size": 100, "selection": "first", "image_size": 32, "epochs": 2,
            "batch_size": 50, "lr": 0.001, "lr_schedule": "cosine", "device": "auto", "precision": "auto", "threads": "auto",
            "eval_batch_size": 100, "turning_point": "tolerance", "acc_tolerance": 0.005, "loss_tolerance": 0.01},
}


def test_tiny_grid_through_dvc(tmp_path):
    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "study").mkdir()
    shutil.copy(ROOT / "study/dvc.yaml", tmp_path / "study/dvc.yaml")
    (tmp_path / "study/params.yaml").write_text(yaml.safe_dump(TINY_STUDY, sort_keys=False))
    sh(tmp_path, "git", "init", "-q")
    dvc(tmp_path, "init", "-q")
    result = dvc(tmp_path, "repro", "study/dvc.yaml")
    ran = stages_run(result.stdout)
    assert sorted(ran) == sorted([f"run@{n}-{s}" for n in ("0.0", "0.6") for s in (0, 1)] + ["aggregate"])
    rows = (tmp_path / "artifacts/study/summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("label_noise,seed,train_accuracy,test_accuracy,generalization_gap")
    noisy = json.loads((tmp_path / "artifacts/study/runs/noise0.6_seed1.json").read_text())
    assert noisy["labels_changed"] == 120
    metrics = json.loads((tmp_path / "artifacts/metrics/study.json").read_text())
    assert metrics["n_runs"] == 4 and set(metrics["acc"]) == {"both", "train_only", "test_only", "neither"}
    assert "| 0.6 | 2 |" in (tmp_path / "artifacts/study/summary.md").read_text()
    assert (tmp_path / "artifacts/study/ratios_vs_gap.png").stat().st_size > 0
    # adding a seed runs only the new cells and the aggregation
    TINY_STUDY_MORE = {**TINY_STUDY, "grid": {"label_noise": [0.0, 0.6], "seeds": [0, 1, 2]}}
    (tmp_path / "study/params.yaml").write_text(yaml.safe_dump(TINY_STUDY_MORE, sort_keys=False))
    ran = stages_run(dvc(tmp_path, "repro", "study/dvc.yaml", "--dry").stdout)
    assert sorted(ran) == ["aggregate", "run@0.0-2", "run@0.6-2"]
