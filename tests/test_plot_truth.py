"""netunits.plots says what it draws: each ROF panel's own baseline, "best detectors" only when the
drawn units pass the threshold, IoUs not rounded up to the threshold, a sentence for a layer with
no detectors. Tiny hand-made inputs; no pipeline run."""
import numpy as np

from netunits import plots
from netunits.methods.rof import RANKINGS


def tiny_curves(final_accuracy):
    n = np.arange(5)
    columns = {"n_units": n}
    for metric, values in (("accuracy", np.linspace(0.1, final_accuracy, 5)), ("loss", np.linspace(2.3, 0.1, 5))):
        columns[metric] = values
        for ranking in RANKINGS:
            columns[f"{metric}_{ranking}"] = values
    return columns


def tiny_metrics(full_accuracy):
    return {"n0_acc": 3, "n0_loss": 4, "n0_acc_tol": 2, "n0_loss_tol": 3, "full_accuracy": full_accuracy}


def baseline_lines(ax):
    return [(line.get_label(), line.get_ydata()[0]) for line in ax.get_lines()
            if line.get_label().startswith("baseline")]


def test_each_accuracy_panel_draws_its_own_subsets_baseline():
    curves = {"train": tiny_curves(0.9), "test": tiny_curves(0.7)}
    metrics = {"train": tiny_metrics(0.9), "test": tiny_metrics(0.7)}
    figure = plots.rof_figure(curves, metrics, 0.7, "l1", "ResNet18")
    axes = figure.axes
    assert axes[0].get_title() == "train: accuracy" and axes[1].get_title() == "test: accuracy"
    assert baseline_lines(axes[0]) == [("baseline (train) = 0.900", 0.9)]
    assert baseline_lines(axes[1]) == [("baseline (test) = 0.700", 0.7)]
    assert baseline_lines(axes[2]) == baseline_lines(axes[3]) == []        # loss panels
    plots.close(figure)


def test_iou_is_not_rounded_up_to_the_threshold():
    assert plots.iou_text(0.0394) == "0.0394"
    assert plots.strip_label("layer4", 7, "hole", 0.0394) == "layer4 unit 7\nhole\nIoU 0.0394"


def test_strips_are_called_detectors_only_when_every_drawn_unit_passes():
    head = "Top-activating probe images with the unit's mask"
    assert plots.strips_title([0.05, 0.04], 0.04) == f"{head} (best detectors, IoU at or above 0.04)"
    assert plots.strips_title([0.0394, 0.03], 0.04) == f"{head} (best units by IoU, none passes 0.04)"
    assert plots.strips_title([0.05, 0.03, 0.02], 0.04) == f"{head} (best units by IoU, 1 of 3 pass 0.04)"
    assert plots.strips_title(None, None) == f"{head} (units with the highest IoU)"


def test_strips_figure_titles_what_it_draws():
    picture = (np.zeros((4, 4), np.uint8), np.eye(4, dtype=bool))
    rows = [(plots.strip_label("layer4", u, "hole", iou), [picture, picture], iou)
            for u, iou in ((1, 0.0394), (2, 0.03))]
    figure = plots.strips_figure(rows, 0.04)
    assert "none passes 0.04" in figure.texts[0].get_text()
    assert "detectors" not in figure.texts[0].get_text()
    assert figure.axes[0].get_ylabel().endswith("IoU 0.0394")
    plots.close(figure)
    # rows without IoUs (title, images): a title that claims nothing about the threshold
    figure = plots.strips_figure([(title, images) for title, images, _ in rows], 0.04)
    assert figure.texts[0].get_text().endswith("(units with the highest IoU)")
    plots.close(figure)


def test_a_layer_without_detectors_gets_a_sentence_not_an_empty_panel():
    figure = plots.concepts_per_layer_figure({"layer2": {"hole": 3, "loop": 1}, "layer3": {}}, 0.04)
    full, empty = figure.axes
    assert full.get_title() == "layer2: 4 detectors of 2 concepts"
    assert [p.get_height() for p in full.patches] == [3, 1]
    assert not empty.axison and empty.get_title() == "" and not empty.patches
    assert [t.get_text() for t in empty.texts] == ["layer3: no detectors: no unit's best concept reaches IoU 0.04"]
    assert figure.texts[0].get_text() == "Units per concept (best concept, IoU at or above 0.04)"
    plots.close(figure)
