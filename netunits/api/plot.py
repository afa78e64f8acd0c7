"""The ROF figure (the ROF notebook's rof_curve_turning_points.pdf) and the role figure, from
rof_sweep's curves and metrics.

From a notebook: `run_plot(PlotInputs(curves, rof_metrics, baseline_accuracy, "l1"), label)`
with the curve tables as column dicts (netunits.files.read_csv) and `label` naming the model
and layer (netunits.plots.model_label).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netunits.files import read_csv, read_json
from netunits.params import PlotParams
from netunits.plots import category_figure, close, rof_figure, save_figure


@dataclass
class PlotInputs:
    curves: dict[str, dict]            # "train", "test" -> curve table columns
    rof_metrics: dict
    baseline_accuracy: float           # the model's test accuracy after training
    ranking: str


@dataclass
class PlotResult:
    rof: object                        # matplotlib figures
    categories: object
    n_units: int

    def summary(self) -> str:
        return f"ROF curves of {self.n_units} units with their turning points (train, test), and the units per role"


def load_plot_inputs(paths: dict[str, Path]) -> PlotInputs:
    return PlotInputs({s: read_csv(paths[f"rof_curve_{s}"]) for s in ("train", "test")},
                      read_json(paths["rof_metrics"]),
                      read_json(paths["train_metrics"])["baseline_accuracy"], read_json(paths["rof_units"])["ranking"])


def run_plot(inputs: PlotInputs, label: str) -> PlotResult:
    n_units = int(inputs.curves["train"]["n_units"][-1])
    figure = rof_figure(inputs.curves, inputs.rof_metrics, inputs.baseline_accuracy, inputs.ranking, label)
    return PlotResult(figure, category_figure(inputs.rof_metrics["taxonomy"], n_units), n_units)


def write_plot(result: PlotResult, paths: dict[str, Path], config: PlotParams) -> None:
    save_figure(result.rof, paths["rof_figure_pdf"], config.dpi)
    save_figure(result.rof, paths["rof_figure"], config.dpi)
    save_figure(result.categories, paths["categories_figure"], config.dpi)
    close(result.rof)
    close(result.categories)
