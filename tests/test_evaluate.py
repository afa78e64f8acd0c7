"""netunits.api.evaluate: planted units with known answers recovered by each method's own code and
the noise unit not significant; the stage on the tiny run; its bad inputs."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import run_main, tiny_params
from netunits.api.evaluate import Settings, answer_network, random_thresholds
from netunits.data.probe import pack_masks
from netunits.methods.formula import to_string
from netunits.methods.stats import balanced_split, benjamini_hochberg
from netunits.params import validate_params
from netunits.runtime import Runtime

SIZE, MASK, GRID, N = 32, 16, 8, 400
PIXEL = ("hole", "blob", "stripe")


def planted_probe():
    """Images that carry their own annotations, so a model can compute planted functions of them:
    channel 0 is the hole mask, channel 1 a digit_3 flag, channel 2 a digit_0 flag plus per-pixel
    noise in its low bits; other pixel concepts are random blobs and stripes."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(N) % 10
    masks = torch.zeros(N, len(PIXEL), MASK, MASK, dtype=torch.bool)
    for i in range(N):
        if int(labels[i]) in (0, 4, 6, 8, 9) or torch.rand(1, generator=generator) < 0.2:
            y, x = torch.randint(0, MASK - 4, (2,), generator=generator).tolist()
            masks[i, 0, y:y + 4, x:x + 4] = True
        y, x = torch.randint(0, MASK - 6, (2,), generator=generator).tolist()
        masks[i, 1, y:y + 6, x:x + 6] = True
        masks[i, 2, :, int(torch.randint(0, MASK, (1,), generator=generator))] = True
    digits = F.one_hot(labels, 10).bool()
    noise = torch.randint(0, 100, (N, SIZE, SIZE), generator=generator)
    images = torch.zeros(N, 3, SIZE, SIZE, dtype=torch.uint8)
    images[:, 0] = masks[:, 0].repeat_interleave(2, 1).repeat_interleave(2, 2).to(torch.uint8) * 200
    images[:, 1] = digits[:, 3, None, None].to(torch.uint8) * 200
    images[:, 2] = (digits[:, 0, None, None].to(torch.int64) * 128 + noise).to(torch.uint8)
    concepts = [{"name": name, "category": name, "level": "pixel", "description": name} for name in PIXEL]
    concepts += [{"name": f"digit_{d}", "category": "class", "level": "image", "description": str(d)}
                 for d in range(10)]
    return {"images": images, "labels": labels, "mask_size": MASK, "pixel_masks": pack_masks(masks.numpy()),
            "image_labels": digits, "annotated": torch.ones(N, len(PIXEL) + 1, dtype=torch.bool),
            "concepts": concepts, "categories": list(PIXEL) + ["class"]}


class Planted(torch.nn.Module):
    """Four channels on an 8 x 8 grid: the hole mask, the digit_3 indicator, hole AND NOT digit_0,
    and noise; a small ramp from the noise keeps their values free of plateaus, so a quantile
    threshold falls inside the planted region."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Identity()

    def forward(self, x):
        hole = F.avg_pool2d((x[:, 0:1] > 0.5).float(), 4)
        digit_3 = (x[:, 1:2] > 0.5).float().mean(dim=(2, 3), keepdim=True).expand_as(hole)
        digit_0 = (x[:, 2:3] >= 0.5).float().mean(dim=(2, 3), keepdim=True)
        noise = F.avg_pool2d(torch.remainder(x[:, 2:3] * 255, 128) / 100, 4)
        jitter = 1 + 0.01 * noise
        maps = torch.cat([hole * jitter, digit_3 * jitter, hole * (1 - digit_0) * jitter, noise], dim=1)
        self.layer(maps)
        return maps.mean(dim=(2, 3))[:, :2]


def planted_settings():
    params = validate_params(tiny_params(
        dissect={"layers": ["layer"], "quantile": 0.98},
        compose={"layers": ["layer"], "max_length": 2, "beam": 5, "candidates": 13},
        clip_dissect={"layers": ["layer"], "soft_wpmi_top_k": 20},
        evaluate={"heldout_fraction": 0.5, "seed": 0, "nulls": ["random_init"], "null_seeds": [0],
                  "min_coverage": 0.01, "fdr": 0.05, "batch_size": 100,
                  "invert_max_fraction": 0.7}))
    return Settings(params.evaluate, params.dissect, params.compose, params.clip_dissect)


def test_planted_units_are_recovered_and_the_noise_unit_is_not():
    probe, settings, runtime = planted_probe(), planted_settings(), Runtime(torch.device("cpu"), "fp32")
    model = Planted()
    fit, held = balanced_split(probe["labels"], 0.5, 0)
    thresholds = random_thresholds(model, None, probe, settings, runtime, "params.yaml")
    answers = answer_network(model, None, probe, thresholds, fit, held, settings, runtime, {"layer": GRID})
    dissection = answers.per_method["dissection"]["layer"]
    assert dissection["answer"][:2] == ["hole", "digit_3"]
    assert dissection["auc"][1] == pytest.approx(1.0)
    assert dissection["fit_score"][0] > 0.3 and dissection["heldout_score"][0] > 0.3
    formula = answers.per_method["formula"]["layer"]
    assert formula["answer"][0] == "hole" or formula["answer"][0].startswith("hole")
    assert to_string(answers.formulas["layer"][2]) == "hole AND NOT digit_0"
    assert formula["heldout_score"][2] > 0.3
    clip = answers.per_method["clip_dissect"]["layer"]
    assert clip["answer"][1] == "digit_3"
    invert = answers.per_method["invert"]["layer"]
    assert invert["answer"][:2] == ["hole", "digit_3"] and invert["auc"][1] == pytest.approx(1.0)
    assert invert["answer"][2] in ("hole AND NOT digit_0", "NOT digit_0 AND hole") and invert["auc"][2] > 0.95
    # the noise unit: no method's answer for it passes Benjamini-Hochberg among the four units,
    # while the planted ones do
    for method in ("dissection", "formula", "clip_dissect", "invert"):
        p = torch.tensor(answers.per_method[method]["layer"]["p_mannwhitney"])
        significant, _ = benjamini_hochberg(p, 0.05)
        assert not significant[3], method
    assert benjamini_hochberg(torch.tensor(dissection["p_mannwhitney"]), 0.05)[0][:3].all()


def test_the_stage_writes_one_table_per_method_the_figure_and_the_metrics(project):
    from stages import evaluate
    assert run_main(evaluate.main) == 0
    folder = project / "artifacts/evaluation"
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["auc_vs_null.png", "clip_dissect.csv", "dissection.csv", "formula.csv", "influence.csv",
                     "invert.csv"]
    metrics = json.loads((project / "artifacts/metrics/evaluation.json").read_text())
    assert set(metrics["methods"]) == {"dissection", "formula", "clip_dissect", "invert"}
    layer4 = metrics["methods"]["dissection"]["layer4"]
    assert set(layer4["share_significant"]) == {"random_init", "permuted_labels"}
    assert 0 <= layer4["mean_heldout_auc"] <= 1 and metrics["split"]["fit"] + metrics["split"]["heldout"] == 60
    header = (folder / "formula.csv").read_text().splitlines()[0].split(",")
    assert header == ["layer", "unit", "answer", "fit_score", "heldout_score", "auc", "p_mannwhitney", "p_random_init",
                      "p_permuted_labels", "significant", "names_class", "margin_effect", "accuracy_effect",
                      "most_hurt"]
    # causal agreement on every dissected layer, from ablate's drops
    assert set(metrics["causal"]) == {"layer2", "layer3", "layer4"}
    assert metrics["causal"]["layer4"]["how"] == "exact" and metrics["causal"]["layer2"]["how"] == "forward"
    # the planted units went through every method, on the compose layer
    planted = metrics["planted"]
    assert planted["layer"] == "layer4" and planted["units"] == ["hole", "digit_3", "hole AND NOT digit_0", "noise"]
    assert set(planted["methods"]) == {"dissection", "formula", "clip_dissect", "invert"}
    assert planted["methods"]["dissection"]["expressible"] == 2 and planted["methods"]["formula"]["expressible"] == 3
    first = (project / "artifacts/metrics/evaluation.json").read_bytes()
    assert run_main(evaluate.main) == 0
    assert (project / "artifacts/metrics/evaluation.json").read_bytes() == first    # seeded: the same answers


@pytest.mark.parametrize("override,message", [
    ("evaluate.heldout_fraction=0.05", "'evaluate.heldout_fraction' is 0.05: the held-out part has 10 of 60 probe "
                                       "images, 1 per class"),
    ("evaluate.nulls=[random_init, shuffled]", "'evaluate.nulls' is ['random_init', 'shuffled']"),
    ("evaluate.heldout_fraction=1.5", "'evaluate.heldout_fraction' is 1.5; it must be a number in (0, 1)"),
    ("evaluate.planted=[hole, spiral]", "'evaluate.planted' names 'spiral', which the probe lacks; it must name the "
                                        "probe's concepts"),
    ("evaluate.planted=['hole AND']", "'evaluate.planted' has a formula that does not parse"),
    ("evaluate.seed=3", "'evaluate.heldout_fraction' and 'evaluate.seed' are 0.5 and 3, but the ablation used 0.5 "
                        "and 0; rerun `dvc repro ablate`"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(project, capsys, override, message):
    from stages import evaluate
    shutil.rmtree(project / "artifacts/evaluation")                    # the tiny run's, to see nothing comes back
    (project / "artifacts/metrics/evaluation.json").unlink()
    assert run_main(evaluate.main, "--set", override) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[0].startswith("error: params.yaml: " + message), error
    assert not (project / "artifacts/evaluation").exists()
    assert not (project / "artifacts/metrics/evaluation.json").exists()
