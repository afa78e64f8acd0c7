"""netunits.methods.dissection and netunits.concepts on inputs checked by hand or by brute force."""
import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation
from skimage.draw import circle_perimeter, line

from netunits.concepts import IMAGE_CONCEPTS, PIXEL_CONCEPTS, concept_annotations, digit_geometry, pixel_masks
from netunits.data.probe import pack_masks, unpack_masks
from netunits.methods import dissection

PIXEL_NAMES = [c[0] for c in PIXEL_CONCEPTS]


@pytest.mark.parametrize("n_values,quantile", [(10, 0.995), (137, 0.9), (1000, 0.995), (1000, 0.5), (3, 0.25)])
def test_streamed_threshold_is_numpys_quantile(n_values, quantile):
    values = torch.rand(4, n_values, generator=torch.Generator().manual_seed(n_values))
    top = dissection.TopValues(4, dissection.values_needed(n_values, quantile))
    for chunk in values.split(7, dim=1):
        top.update(chunk)
    expected = np.quantile(values.numpy(), quantile, axis=1)
    assert np.allclose(dissection.quantile_from_top(top.values, n_values, quantile).numpy(), expected,
                       rtol=1e-6, atol=1e-7)


def brute_force_iou(unit, pixel, image, annotated, category):
    """Per unit and concept, one image at a time, in numpy: NetDissect's definition."""
    n, n_units, positions = unit.shape
    n_pixel = pixel.shape[1]
    iou = np.zeros((n_units, n_pixel + image.shape[1]))
    for u in range(n_units):
        for c in range(iou.shape[1]):
            inter = union_unit = area_concept = 0
            for i in range(n):
                concept = pixel[i, c] if c < n_pixel else np.full(positions, image[i, c - n_pixel])
                inter += np.logical_and(unit[i, u], concept).sum()
                area_concept += concept.sum()
                if annotated[i, category[c]]:
                    union_unit += unit[i, u].sum()
            union = union_unit + area_concept - inter
            iou[u, c] = inter / union if union else 0.0
    return iou


def test_vectorised_iou_equals_brute_force():
    rng = np.random.default_rng(0)
    unit = rng.random((6, 5, 20)) < 0.3
    pixel = rng.random((6, 3, 20)) < 0.4
    image = rng.random((6, 2)) < 0.5
    category = [0, 0, 1, 2, 2]
    annotated = rng.random((6, 3)) < 0.7
    tally = dissection.IoUTally(5, 3, 2, category, 3)
    for batch in (slice(0, 4), slice(4, 6)):
        tally.update(torch.from_numpy(unit[batch]), torch.from_numpy(pixel[batch]), torch.from_numpy(image[batch]),
                     torch.from_numpy(annotated[batch]))
    assert np.allclose(tally.iou().numpy(), brute_force_iou(unit, pixel, image, annotated, category))


@pytest.mark.parametrize("share", [0.02, 0.6])        # few concepts per image (per-image path), many (batched)
def test_packed_and_sparse_counts_equal_the_brute_force(share):
    rng = np.random.default_rng(3)
    n_images, n_units, n_pixel, positions = 7, 4, 40, 25
    unit = rng.random((n_images, n_units, positions)) < 0.3
    present = rng.random((n_images, n_pixel)) < share
    present[0] = False                                      # an image with no concept at all
    pixel = (rng.random((n_images, n_pixel, positions)) < 0.5) & present[:, :, None]
    image = rng.random((n_images, 2)) < 0.5
    category = [i % 3 for i in range(n_pixel)] + [3, 3]
    annotated = rng.random((n_images, 4)) < 0.8
    plain, packed = (dissection.IoUTally(n_units, n_pixel, 2, category, 4) for _ in range(2))
    for batch in (slice(0, 3), slice(3, 7)):
        args = torch.from_numpy(image[batch]), torch.from_numpy(annotated[batch])
        plain.update(torch.from_numpy(unit[batch]), torch.from_numpy(pixel[batch]), *args)
        packed.update_packed(torch.from_numpy(unit[batch]), pack_masks(pixel[batch].reshape(-1, n_pixel, 5, 5)), *args)
    for key in ("intersection", "unit_area", "concept_area"):
        assert torch.equal(getattr(plain, key), getattr(packed, key)), key
    assert np.allclose(plain.iou().numpy(), brute_force_iou(unit, pixel, image, annotated, category))


def test_unit_masks_do_not_depend_on_the_maps_memory_layout():
    maps = torch.rand(4, 32, 7, 7, generator=torch.Generator().manual_seed(2))
    thresholds = torch.quantile(maps.transpose(0, 1).flatten(1), 0.9, dim=1)
    plain = dissection.unit_masks(maps, thresholds, 112)
    assert torch.equal(dissection.unit_masks(maps.contiguous(memory_format=torch.channels_last), thresholds, 112),
                       plain)
    assert torch.equal(dissection.upsample(maps[1:2, 5:9], 112), dissection.upsample(maps, 112)[1:2, 5:9])


def test_firing_masks_are_unit_masks_where_a_map_can_fire_and_give_the_same_counts():
    gen = torch.Generator().manual_seed(5)
    maps = torch.rand(6, 5, 3, 3, generator=gen) ** 4              # most maps stay under their threshold
    maps[2, 1] = 0.0                                               # a silent map, threshold 0: empty mask
    thresholds = torch.tensor([0.5, 0.0, 0.7, 0.9, 0.3])
    dense = dissection.unit_masks(maps, thresholds, 8)
    image, unit, rows = dissection.firing_unit_masks(maps, thresholds, 8, budget=64 * 3)  # several chunks
    assert torch.equal(rows, dense[image, unit])
    skipped = torch.ones(6, 5, dtype=torch.bool)
    skipped[image, unit] = False
    assert not dense[skipped].any() and skipped.any()
    assert torch.all(image[1:] >= image[:-1])                      # image-major
    n_pixel = 3
    pixel = torch.rand(6, n_pixel, 8, 8, generator=gen) < 0.4
    pixel[1] = False
    args = torch.rand(6, 2, generator=gen) < 0.5, torch.ones(6, 4, dtype=torch.bool)
    by_masks, by_rows = (dissection.IoUTally(5, n_pixel, 2, [0, 1, 2, 3, 3], 4) for _ in range(2))
    by_masks.update(dense, pixel.flatten(2), *args)
    by_rows.update_rows(image, unit, rows, pack_masks(pixel), *args)
    for key in ("intersection", "unit_area", "concept_area"):
        assert torch.equal(getattr(by_masks, key), getattr(by_rows, key)), key


def test_a_unit_that_is_a_concept_gets_iou_one():
    concept = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5
    maps = concept.float() * 3.0                                # active exactly where the concept is
    masks = dissection.unit_masks(maps, torch.tensor([1.5]), 4)
    tally = dissection.IoUTally(1, 1, 0, [0], 1)
    tally.update(masks, concept.flatten(2), torch.zeros(8, 0, dtype=torch.bool), torch.ones(8, 1, dtype=torch.bool))
    assert tally.iou().tolist() == [[1.0]]
    values, indices = dissection.best_concepts(torch.tensor([[0.125, 0.375, 0.375, 0.25]]), 3)
    assert indices.tolist() == [[1, 2, 3]] and values.tolist() == [[0.375, 0.375, 0.25]]


def test_masks_round_trip_bit_packed():
    masks = np.random.default_rng(2).random((3, 4, 5, 5)) < 0.5           # 25 bits: not a whole byte
    packed = pack_masks(masks)
    assert packed.shape == (3, 4, 4) and packed.dtype == torch.uint8
    assert torch.equal(unpack_masks(packed, 5), torch.from_numpy(masks.reshape(3, 4, 25)))


def draw(segments=(), circles=(), size=56):
    image = np.zeros((size, size), dtype=bool)
    for r0, c0, r1, c1 in segments:
        rows, cols = line(r0, c0, r1, c1)
        image[rows, cols] = True
    for row, col, radius in circles:
        rows, cols = circle_perimeter(row, col, radius)
        image[rows, cols] = True
    return binary_dilation(image, iterations=2).astype(float)


def test_holes_endpoints_and_junctions_of_drawn_digits():
    zero, eight = draw(circles=[(28, 28, 15)]), draw(circles=[(17, 28, 9), (38, 28, 10)])
    one = draw(segments=[(8, 28, 48, 28)])
    four = draw(segments=[(8, 16, 32, 10), (32, 10, 32, 44), (8, 34, 48, 34)])   # two strokes crossing
    assert [digit_geometry(d)["n_holes"] for d in (zero, eight, one, four)] == [1, 2, 0, 0]
    masks = {name: pixel_masks(digit_geometry(four), (2.0, 6.0)) for name in ("four",)}["four"]
    endpoint, junction = masks[PIXEL_NAMES.index("endpoint")], masks[PIXEL_NAMES.index("junction")]
    for row, col in ((8, 16), (32, 44), (8, 34), (48, 34)):                   # the stroke ends
        assert endpoint[row - 3:row + 4, col - 3:col + 4].any(), (row, col)
    assert junction[29:36, 31:38].any()                                      # where the bar crosses the stem
    assert not junction[:, :5].any() and not endpoint[20:26, 30:38].any()
    one_masks = pixel_masks(digit_geometry(one), (2.0, 6.0))
    assert one_masks[PIXEL_NAMES.index("vertical")].sum() > 0.8 * one_masks[PIXEL_NAMES.index("stroke")].sum()
    assert not one_masks[PIXEL_NAMES.index("hole")].any() and not one_masks[PIXEL_NAMES.index("junction")].any()


def test_image_level_concepts_of_a_probe_set():
    digits = np.stack([draw(circles=[(28, 28, 15)]), draw(circles=[(17, 28, 9), (38, 28, 10)]),
                       draw(segments=[(48, 20, 8, 36)])])                    # 0, 8, and a 1 leaning right
    masks, labels = concept_annotations(digits, [0, 8, 1])
    assert masks.shape == (3, len(PIXEL_CONCEPTS), 56, 56) and labels.shape == (3, len(IMAGE_CONCEPTS))
    on = [{IMAGE_CONCEPTS[j][0] for j in np.flatnonzero(row)} for row in labels]
    assert {"digit_0", "holes_1", "upright"} <= on[0] and {"digit_8", "holes_2"} <= on[1]
    assert {"digit_1", "holes_0", "slant_right"} <= on[2]
    assert all(len(names & {"small", "large"}) == 1 and len(names & {"thin", "medium", "thick"}) == 1 for names in on)


def test_histogram_by_hand():
    histogram = torch.zeros(2, 4, dtype=torch.int64)
    dissection.add_histogram(histogram, torch.tensor([[0.0, 0.9, 2.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0]]),
                             torch.tensor([4.0, 0.0]))
    # unit 0 over [0, 4] in bins of 1: 0 and 0.9 -> bin 0, 2 -> bin 2, 4 and 5 (above the top) -> bin 3
    assert histogram.tolist() == [[2, 0, 1, 2], [5, 0, 0, 0]]


def test_a_unit_silent_on_most_positions_gets_no_whole_image_mask():
    # threshold 0 (the unit is zero on more than 0.5% of positions): only its active positions count
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, 1, 1] = 2.0
    masks = dissection.unit_masks(maps, torch.tensor([0.0]), 4)
    assert int(masks.sum()) == 1


def test_top_images_merged_over_batches_by_hand():
    # 2 units, 5 images of 1 x 2 maps; peaks: unit 0 [1, 5, 3, 5, 2], unit 1 [4, 0, 4, 1, 9]
    peaks = torch.tensor([[1.0, 5.0, 3.0, 5.0, 2.0], [4.0, 0.0, 4.0, 1.0, 9.0]])
    maps = torch.stack([peaks.T, peaks.T - 1], dim=2)[:, :, None]                    # 5 x 2 x 1 x 2
    kept = None
    for first, last in ((0, 2), (2, 3), (3, 5)):
        kept = dissection.merge_top_images(kept, maps[first:last], first, 3)
    values, indices, unit_maps = kept
    # ties go to the earlier image: unit 0's two 5s keep images 1 then 3, unit 1's two 4s images 0 then 2
    assert indices.tolist() == [[1, 3, 2], [4, 0, 2]]
    assert values.tolist() == [[5.0, 5.0, 3.0], [9.0, 4.0, 4.0]]
    assert torch.equal(unit_maps, maps.transpose(0, 1)[torch.arange(2)[:, None], indices])
    whole = dissection.merge_top_images(None, maps, 0, 3)
    assert all(torch.equal(a, b) for a, b in zip(kept, whole))                 # batching changes nothing
    few = dissection.merge_top_images(None, maps[:2], 0, 3)                    # k above the images seen
    assert few[1].tolist() == [[1, 0], [0, 1]]


def test_unit_rows_and_summaries_by_hand():
    iou = torch.tensor([[0.1, 0.5, 0.2], [0.3, 0.3, 0.0], [0.0, 0.02, 0.01]])
    rows = dissection.unit_rows(iou, torch.tensor([1.0, 2.0, 3.0]), ["a", "b", "c"], ["x", "x", "y"], 0.25)
    assert [(r["concept"], r["category"], r["concept_2"], r["concept_3"], r["detector"]) for r in rows] == \
        [("b", "x", "c", "a", 1), ("a", "x", "b", "c", 1), ("b", "x", "c", "a", 0)]   # ties to the lower index
    assert rows[0]["iou"] == pytest.approx(0.5) and rows[0]["iou_2"] == pytest.approx(0.2)
    assert rows[2]["threshold"] == 3.0 and list(rows[0]) == ["unit", "concept", "category", "iou", "threshold",
                                                             "detector", "concept_2", "iou_2", "concept_3", "iou_3"]
    assert dissection.detectors_per_concept(rows) == {"b": 1, "a": 1}
    summary = dissection.detector_summary(rows)
    assert summary == {"units": 3, "detectors": 2, "unique_concepts": 2,
                       "mean_best_iou": pytest.approx((0.5 + 0.3 + 0.02) / 3)}
    joined = [{**r, "category_acc": role} for r, role in zip(rows, ["both", "both", "none"])]
    roles = dissection.role_summary(joined, ("both", "none", "acc"))
    assert roles["both"] == {"units": 2, "detector_share": 1.0, "mean_best_iou": pytest.approx(0.4)}
    assert roles["none"]["detector_share"] == 0.0 and roles["acc"] == {"units": 0, "detector_share": None,
                                                                       "mean_best_iou": None}
