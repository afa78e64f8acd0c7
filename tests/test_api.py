"""netunits.api: one call per stage on tensors, with no file touched (as from a notebook)."""
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from netunits import api
from netunits.api.influential_filters import InfluenceInputs, run_influential_filters
from netunits.api.rof_sweep import RofSweepInputs, run_rof_sweep
from netunits.errors import PipelineError
from netunits.params import InfluenceParams, RofParams


def test_run_functions_are_found_lazily_and_one_stage_loads_no_other():
    assert {"run_rof_sweep", "run_train", "run_plot"} <= set(api.__all__)
    assert api.run_rof_sweep is run_rof_sweep
    with pytest.raises(AttributeError):
        _ = api.run_nothing
    code = "import sys, netunits.api.rof_sweep; print(sorted(m for m in sys.modules if m.startswith('netunits.api.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['netunits.api.rof_sweep']"


def planted(n_per_class=20, n_units=12, seed=0):
    """Two classes; class c lights up units c and c + 2 (and the final layer reads them so)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(2).repeat_interleave(n_per_class)
    features = torch.rand(len(labels), n_units, generator=g) * 0.1
    features[torch.arange(len(labels)), labels] += 1.0
    features[torch.arange(len(labels)), labels + 2] += 0.8
    weight = torch.zeros(2, n_units)
    weight[0, [0, 2]], weight[1, [1, 3]] = 1.0, 1.0
    return features, labels, weight, torch.zeros(2)


def test_rof_sweep_from_tensors():
    features, labels, weight, bias = planted()
    subset = {"units": features, "labels": labels, "logits": features @ weight.T + bias}
    result = run_rof_sweep(RofSweepInputs(weight, bias, {"train": subset, "test": subset}),
                           RofParams(ranking="l1", turning_point="exact", acc_tolerance=0.0, loss_tolerance=0.0,
                                     seed=0))
    curve = result.curves["test"]
    assert len(curve) == 13 and curve[0]["n_units"] == 0 and curve[-1]["accuracy"] == 1.0
    # the four planted units carry the L1 mass: retrieved first, and all of the accuracy by then
    assert sorted(result.units["subsets"]["train"]["order"][:4]) == [0, 1, 2, 3] and curve[4]["accuracy"] == 1.0
    assert sorted(r["rank_train"] for r in result.roles) == list(range(1, 13))
    assert sum(r["acc"] for r in result.counts) == 12
    assert result.metrics["taxonomy"]["exact"]["acc"]["both"] == result.counts[0]["acc"]
    assert result.summary().startswith("train: n0_acc ")


def test_influential_filters_from_tensors():
    features, labels, weight, bias = planted()
    inputs = InfluenceInputs("avgpool", weight, bias, {"train": features, "test": features},
                             {"train": labels, "test": labels}, features @ weight.T, {(s, m): set() for s in
                                                                                      ("train", "test") for m in
                                                                                      ("acc", "loss")},
                             {"unit": [str(u) for u in range(12)], "rank_train": ["1"] * 12, "rank_test": ["1"] * 12,
                              "category_acc": ["neither"] * 12, "category_loss": ["neither"] * 12})
    config = InfluenceParams(k=[2], k_image="same", table_k=2, noise_seed=0)
    result = run_influential_filters(inputs, config)
    assert result.sets["sets"]["2"]["0"]["units"] == [0, 2] and result.sets["sets"]["2"]["1"]["units"] == [1, 3]
    assert result.by_k[0]["accuracy_decomposed"] == 1.0
    assert [r["influential_for_k2"] for r in result.units[:5]] == ["0", "1", "0", "1", ""]
    with pytest.raises(PipelineError, match=r"^x.yaml: 'influence.k' or 'influence.k_image' is 13 but avgpool has "
                                            r"only 12 units"):
        run_influential_filters(inputs, InfluenceParams(k=[13], k_image="same", table_k=13, noise_seed=0), "x.yaml")
