"""Stage compare_models on the tiny run: the trained network, another seed, label noise and random
weights dissected on one split; rows, metrics and the figure; the significance count by hand."""
import csv
import json

import torch

from conftest import run_main, tiny_params
from netunits.api.compare_models import layer_row
from netunits.api.evaluate import Settings
from netunits.params import validate_params


def test_a_layer_row_counts_significant_answers_and_distinct_concepts_by_hand():
    params = validate_params(tiny_params(evaluate={"fdr": 0.05}, dissect={"iou_threshold": 0.04}))
    settings = Settings(params.evaluate, params.dissect, params.compose, params.clip_dissect)
    found = {"answer": ["hole", "hole", "stroke", "digit_3"], "fit_iou": torch.tensor([0.05, 0.01, 0.04, 0.2]),
             "auc": torch.tensor([0.9, 0.8, 0.5, 0.99]), "p": torch.tensor([0.001, 0.01, 0.6, 0.0001])}
    row = layer_row("net", "layer4", found, settings)
    # BH at 5% over 4: sorted p 0.0001, 0.001, 0.01 pass (0.0125, 0.025, 0.0375), 0.6 does not
    assert row["significant"] == 3 and row["significant_concepts"] == 2
    assert row["detectors"] == 3 and row["detector_concepts"] == 3
    assert row["_significant_set"] == ["digit_3", "hole"]


def test_the_stage_compares_four_networks_on_every_layer(project):
    from stages import compare_models
    assert run_main(compare_models.main) == 0
    rows = list(csv.DictReader(open(project / "artifacts/compare/models.csv")))
    networks = list(dict.fromkeys(r["network"] for r in rows))
    assert networks == ["trained seed 0", "trained seed 1", "label noise 0.8", "random init 0"]
    assert len(rows) == 4 * 3 and {r["layer"] for r in rows} == {"layer2", "layer3", "layer4"}
    metrics = json.loads((project / "artifacts/metrics/compare.json").read_text())
    assert metrics["seeds"]["networks"] == ["trained seed 0", "trained seed 1"]
    train = json.loads((project / "artifacts/metrics/train.json").read_text())
    assert metrics["networks"]["trained seed 0"]["test_accuracy"] == train["baseline_accuracy"]
    assert metrics["networks"]["random init 0"]["test_accuracy"] is None
    for layer, entry in metrics["seeds"]["layers"].items():
        assert entry["significant"] == [metrics["networks"][n]["layers"][layer]["significant"]
                                        for n in metrics["seeds"]["networks"]]
        # a concept significant in every seed is one of each seed's significant concepts
        assert len(entry["stable_significant_concepts"]) <= min(
            metrics["networks"][n]["layers"][layer]["significant_concepts"] for n in metrics["seeds"]["networks"])
    assert (project / "artifacts/plots/compare_models.png").stat().st_size > 0
