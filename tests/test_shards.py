"""netunits.shards: the activation passes over shards of the probe images, merged, EQUAL (bit for
bit) the single pass: dissect's thresholds and counts, compose's unit positions, clip_dissect's
unit values; on a randomly initialised ResNet18 at 32 px in fp32 and 11 synthetic probe images."""
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.synthetic_broden import write_synthetic_broden
from netunits.api.clip_dissect import ClipDissectInputs, unit_summaries
from netunits.api.compose import (
    ComposeInputs,
    FiredMaps,
    fired_maps_shard,
    merge_fired_maps,
    positions_of_units,
    unit_positions,
)
from netunits.api.dissect import (
    DissectInputs,
    count_shard,
    dissect_result,
    merge_count_shards,
    merge_threshold_shards,
    run_dissect,
    threshold_shard,
)
from netunits.data.broden import load_broden
from netunits.errors import PipelineError
from netunits.methods.bitmasks import pack
from netunits.methods.dissection import merge_kept_top_images, merge_top_values
from netunits.models.registry import build_model
from netunits.runtime import Runtime
from netunits.shards import (
    clip_summaries_in_shards,
    compose_masks,
    compose_positions_in_shards,
    dissect_in_shards,
    shard_ranges,
)

N_IMAGES, BATCH = 11, 3          # batches 3, 3, 3, 2: two and three shards are uneven
RUNTIME = Runtime(torch.device("cpu"), "fp32")
DISSECT = SimpleNamespace(layers=["layer2", "layer3", "layer4"], quantile=0.9, top_images=3, batch_size=BATCH)


# ------------------------------------------------------------------------------ by hand
def test_shard_ranges_hold_whole_batches_as_evenly_as_can_be():
    assert shard_ranges(11, 1, 3) == [(0, 11)]
    assert shard_ranges(11, 2, 3) == [(0, 6), (6, 11)]
    assert shard_ranges(11, 3, 3) == [(0, 6), (6, 9), (9, 11)]
    assert shard_ranges(11, 4, 3) == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert shard_ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_ranges(40, 40) == [(i, i + 1) for i in range(40)]


@pytest.mark.parametrize("shards", [50, 0, -1, 2.0, True])
def test_too_many_or_bad_shards_are_one_line(shards):
    with pytest.raises(PipelineError) as error:
        shard_ranges(40, shards, key="dissect.shards")
    assert str(error.value) == f"params.yaml: 'dissect.shards' is {shards!r}: the probe has 40 images; it must be " \
                               f"from 1 to 40"
    with pytest.raises(PipelineError, match=r"^x.yaml: 'dissect.shards' is 4: the probe has 40 images, 3 batches of "
                                            r"16 \('dissect.batch_size'\); it must be from 1 to 3$"):
        shard_ranges(40, 4, 16, "dissect.shards", "x.yaml", "dissect.batch_size")


def test_top_values_merge_to_the_top_of_the_union():
    a = torch.tensor([[5.0, 3.0, 1.0], [2.0, 2.0, 0.0]])            # two units, one shard's largest
    b = torch.tensor([[4.0, 2.0], [7.0, 2.0]])
    assert torch.equal(merge_top_values([a, b], 3), torch.tensor([[5.0, 4.0, 3.0], [7.0, 2.0, 2.0]]))
    assert merge_top_values([a], 3) is a


def test_top_images_merge_keeps_the_earlier_image_among_equal_peaks():
    maps = torch.arange(4.0).view(1, 4, 1, 1)                        # one unit, four "maps" told apart by value
    first = (torch.tensor([[9.0, 5.0]]), torch.tensor([[1, 0]]), maps[:, :2])
    second = (torch.tensor([[5.0, 9.0]]), torch.tensor([[3, 4]]), maps[:, 2:])   # not sorted: only merged
    peaks, images, kept = merge_kept_top_images([first, second], 3)
    assert peaks.tolist() == [[9.0, 9.0, 5.0]] and images.tolist() == [[1, 4, 0]]
    assert kept.flatten().tolist() == [0.0, 3.0, 1.0]


# ------------------------------------------------------------------------------ a tiny model and probe
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards") / "broden"
    write_synthetic_broden(folder, N_IMAGES, 40, seed=1, per_image=6, unannotated=0.3)
    probe = load_broden(folder, image_size=32, mask_size=8, size=N_IMAGES)
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    single = run_dissect(DissectInputs(model, probe, None, "sha"), DISSECT, RUNTIME)
    return model, probe, single


def layer_tensors(result):
    return {(layer, key): value for layer, tallies in result.per_layer.items() for key, value in vars(tallies).items()}


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_dissect_in_shards_equals_the_single_pass(setup, shards):
    model, probe, single = setup
    merged = dissect_in_shards(DissectInputs(model, probe, None, "sha"), DISSECT, RUNTIME, shards)
    expected = layer_tensors(single)
    assert layer_tensors(merged).keys() == expected.keys()
    for key, value in layer_tensors(merged).items():
        assert value.dtype == expected[key].dtype and torch.equal(value, expected[key]), key
    # not a vacuous comparison: units fire above their thresholds on concepts
    assert single.per_layer["layer2"].intersection.sum() > 0 and (single.per_layer["layer2"].thresholds > 0).sum() > 64


def test_shards_run_as_independent_tasks_in_any_order(setup):
    """Each shard's result pickled, as a task elsewhere would return it, and handed back out of order."""
    model, probe, single = setup
    inputs, ranges = DissectInputs(model, probe, None, "sha"), [(9, 11), (0, 6), (6, 9)]
    back = [pickle.loads(pickle.dumps(threshold_shard(inputs, DISSECT, RUNTIME, shard))) for shard in ranges]
    thresholds = merge_threshold_shards(back, DISSECT.quantile)
    back = [pickle.loads(pickle.dumps(count_shard(inputs, DISSECT, RUNTIME, thresholds, shard))) for shard in ranges]
    merged = dissect_result(inputs, DISSECT, thresholds, merge_count_shards(back, DISSECT.top_images))
    assert all(torch.equal(value, layer_tensors(single)[key]) for key, value in layer_tensors(merged).items())
    with pytest.raises(PipelineError, match=r"dissect's second pass: the shards cover probe images \[\(0, 6\), "
                                            r"\(9, 11\)\]; they must cover 0 to 11 once"):
        merge_count_shards(back[:2], DISSECT.top_images)


@pytest.mark.parametrize("resolution", ["mask", "layer"])
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_compose_positions_in_shards_equal_the_single_pass(setup, shards, resolution):
    model, probe, single = setup
    config = SimpleNamespace(resolution=resolution, batch_size=BATCH)
    inputs = ComposeInputs(model, None, probe, single.to_dict())
    size, words = compose_masks(inputs, "layer3", config)
    assert (size, words) == ((8, 1) if resolution == "mask" else (2, 1))
    assert words == pack(torch.zeros(1, size, size, dtype=torch.bool)).shape[1]
    run = dict(batch_size=BATCH, device=RUNTIME.device, precision="fp32", input_spec=None, key="compose.layers")
    expected = unit_positions(model, probe, "layer3", single.per_layer["layer3"].thresholds, size, words, run)
    merged = compose_positions_in_shards(inputs, "layer3", config, RUNTIME, shards)
    assert len(merged) == len(expected) == 256 and sum(map(len, expected)) > 0
    for unit, (got, want) in enumerate(zip(merged, expected)):
        assert got.dtype == want.dtype and np.array_equal(got, want), unit
    # the counts compose's search reads from them: each unit's area and its area per image
    per_image = [np.bincount(p // (words * 64), minlength=N_IMAGES) for p in merged]
    assert np.array_equal(per_image, [np.bincount(p // (words * 64), minlength=N_IMAGES) for p in expected])


def test_fired_map_shards_must_cover_the_probe_once():
    part = FiredMaps(0, 5, 11, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2, 2), np.float32))
    with pytest.raises(PipelineError, match=r"compose's unit masks: the shards cover probe images \[\(0, 5\)\]"):
        merge_fired_maps([part])


def test_fired_maps_spilled_to_a_file_give_the_positions_held_in_memory(setup, tmp_path):
    model, probe, single = setup
    thresholds = single.per_layer["layer3"].thresholds
    run = dict(batch_size=BATCH, device=RUNTIME.device, precision="fp32", input_spec=None, key="compose.layers")
    held = fired_maps_shard(model, probe, "layer3", thresholds, run, (0, N_IMAGES))
    with open(tmp_path / "spill", "w+b") as spill:
        spilled = fired_maps_shard(model, probe, "layer3", thresholds, run, (0, N_IMAGES), spill)
        assert isinstance(spilled.maps, np.memmap) and np.array_equal(spilled.maps, held.maps)
        some = range(3, 40)
        for got, want in zip(positions_of_units(spilled, thresholds, 8, 1, some),
                             positions_of_units(held, thresholds, 8, 1, some)):
            assert np.array_equal(got, want)


@pytest.mark.parametrize("pool", ["mean", "max"])
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_clip_summaries_in_shards_equal_the_single_pass(setup, shards, pool):
    model, probe, _ = setup
    config = SimpleNamespace(layers=["layer2", "layer4"], pool=pool, batch_size=BATCH)
    expected = unit_summaries(model, probe["images"], config.layers, pool, BATCH, RUNTIME, None)
    merged = clip_summaries_in_shards(ClipDissectInputs(model, None, probe, [], None, {}), config, RUNTIME, shards)
    assert merged.keys() == expected.keys()
    for layer, values in merged.items():
        assert values.shape == (N_IMAGES, expected[layer].shape[1]) and torch.equal(values, expected[layer]), layer
