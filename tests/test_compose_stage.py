"""The compose stage on the tiny run: formulas that parse and score as the dense definition says,
the indres options, and bad input as one line with nothing written."""
import json

import pytest
import torch

from conftest import TINY_PARAMS, run_main, tiny_params, write_params
from netunits.activations import iterate_activations
from netunits.data.probe import load_probe, unpack_masks
from netunits.files import read_csv
from netunits.methods.compose import (Primitives, concept_masks, evaluate, formula_length, parse, plain_score,
                                      to_string, unit_mask_positions, unpack)
from netunits.models.registry import load_checkpoint
from netunits.runtime import choose_precision
from stages import compose


def dense_unit_masks(layer, size):
    """Every unit's mask on the probe set, dense (units x images x size x size)."""
    probe = load_probe("data/probe/probe.pt")
    model, checkpoint = load_checkpoint("artifacts/train/model.pt")
    thresholds = torch.load("artifacts/dissect/tallies.pt", weights_only=False)["per_layer"][layer]["thresholds"]
    masks = None
    device = torch.device("cpu")
    precision = choose_precision(TINY_PARAMS["compute"]["precision"], device, analysis=True)  # the stage's
    for start, outputs, _ in iterate_activations(model, probe["images"], [layer], 30, device, precision,
                                                 checkpoint["input"]):
        maps = outputs[layer]
        if masks is None:
            masks = torch.zeros(maps.shape[1], len(probe["images"]), size * size, dtype=torch.bool)
        image, unit, position = unit_mask_positions(maps, thresholds, size)
        masks[unit, image + start, position] = True
    return masks.view(len(masks), -1, size, size), probe


def concept_dict(probe, resolution, size):
    return dict(concept_masks(probe, resolution, size, 0.390625))


def test_formulas_parse_back_and_score_as_the_dense_definition(project):
    table = read_csv(project / "artifacts/compose/formulas.csv", numeric=False)
    metrics = json.loads((project / "artifacts/metrics/compose.json").read_text())
    assert table["layer"] == ["layer4"] * 512 and table["unit"] == [str(u) for u in range(512)]
    masks, probe = dense_unit_masks("layer4", 16)
    concepts = concept_dict(probe, "mask", 16)
    saved = torch.load(project / "artifacts/compose/top_masks.pt", weights_only=True)["per_layer"]["layer4"]
    tallies = torch.load(project / "artifacts/dissect/tallies.pt", weights_only=True)["per_layer"]["layer4"]
    assert saved["top_images"].equal(tallies["top_images"]) and saved["size"] == 16
    checked = 0
    for unit in range(512):
        if not table["formula"][unit]:
            assert not bool(masks[unit].any())
            continue
        formula = parse(table["formula"][unit])
        assert to_string(formula) == table["formula"][unit] and formula_length(formula) == int(table["length"][unit])
        assert float(table["score"][unit]) >= float(table["single_score"][unit]) - 1e-6
        if unit % 16 == 0:   # the dense definition, on every 16th unit
            dense = plain_score(masks[unit], evaluate(formula, concepts, 1), formula_length(formula))
            assert dense == pytest.approx(float(table["score"][unit]), rel=1e-5, abs=1e-6)
            single = plain_score(masks[unit], concepts[table["single"][unit]], 1)
            assert single == pytest.approx(float(table["single_iou"][unit]), rel=1e-5, abs=1e-6)
            # the report's strip: the formula's mask on the unit's top images
            shown = saved["masks"][unit]
            assert unpack_masks(shown[None], 16).view(-1, 16, 16).equal(
                evaluate(formula, concepts, 1)[saved["top_images"][unit]])
            checked += 1
    assert checked >= 16
    layer = metrics["layers"]["layer4"]
    assert layer["units"] == 512 and sum(layer["formulas_by_length"].values()) == layer["units_with_mask"]
    scores = [layer["mean_score_by_length"][str(n)] for n in (1, 2, 3) if str(n) in layer["mean_score_by_length"]]
    assert scores == sorted(scores)                   # a longer formula is found only when it scores higher
    assert (project / "artifacts/plots/compose_lengths.png").stat().st_size > 0


def test_indres_options_on_the_layers_own_grid(project):
    write_params(project, tiny_params(compose={
        "layers": ["layer3"], "resolution": "layer",
        "connectors": ["OR", "AND", "AND NOT", "WITH", "CLOSE TO", "CLOSE"],
        "expand": True, "score": "imrou", "length_penalty": 0.001, "beam": 4}))
    assert run_main(compose.main) == 0
    table = read_csv(project / "artifacts/compose/formulas.csv", numeric=False)
    metrics = json.loads((project / "artifacts/metrics/compose.json").read_text())
    assert metrics["resolution"] == "layer" and metrics["score"] == "imrou" and len(table["unit"]) == 256
    masks, probe = dense_unit_masks("layer3", 2)                   # layer3 is 2 x 2 at 32 px
    concepts = concept_dict(probe, "layer", 2)
    saved = torch.load(project / "artifacts/compose/top_masks.pt", weights_only=True)["per_layer"]["layer3"]
    primitives = Primitives(concepts.items(), 2, ["CLOSE"], expand_primitives=True)
    expanded = {name: unpack(bits, 2) for name, bits in zip(primitives.names, primitives.bits)}   # with <name>-X
    for unit in range(0, 256, 32):
        if table["formula"][unit]:
            formula = parse(table["formula"][unit])
            dense = plain_score(masks[unit], evaluate(formula, expanded, 2), formula_length(formula), score="imrou",
                                r=0.75, penalty=0.001)
            assert dense == pytest.approx(float(table["score"][unit]), rel=1e-5, abs=1e-6)
            assert unpack_masks(saved["masks"][unit:unit + 1], 2).view(-1, 2, 2).equal(
                evaluate(formula, expanded, 2)[saved["top_images"][unit]])


@pytest.mark.parametrize("compose_params, message", [
    ({"connectors": ["OR", "XOR"]}, "'compose.connectors' is ['OR', 'XOR']; it must be a non-empty list"),
    ({"beam": 0}, "'compose.beam' is 0; it must be an integer >= 1"),
    ({"max_length": 0}, "'compose.max_length' is 0; it must be an integer from 1 to 10"),
    ({"layers": ["layer1"]}, "'compose.layers' has 'layer1', which was not dissected"),
])
def test_bad_input_is_one_line_and_writes_nothing(project, capsys, compose_params, message):
    outputs = [project / "artifacts/compose/formulas.csv", project / "artifacts/metrics/compose.json",
               project / "artifacts/plots/compose_lengths.png"]
    before = [path.read_bytes() for path in outputs]
    write_params(project, tiny_params(compose=compose_params))
    assert run_main(compose.main) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert [path.read_bytes() for path in outputs] == before
