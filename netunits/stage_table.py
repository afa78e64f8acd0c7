"""The stage table: every stage's script, the params it reads and its files, each path written
once, here.

Stage scripts get their paths from `stage_paths`; `python -m netunits.stage_table` writes the
three DVC pipelines from the same table (dvc.yaml, cifar/dvc.yaml, study/dvc.yaml), with each
stage's code deps read from the imports of its script.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Out:
    """An output: cached by DVC (cache=True, ignored by git) or committed (cache=False); a
    `metric` is a JSON file `dvc metrics` shows."""
    path: str
    cache: bool = True
    metric: bool = False


def kept(path: str) -> Out:
    """A small output committed to git (a table, a figure, a folder of CSVs)."""
    return Out(path, cache=False)


def metric(path: str) -> Out:
    return Out(path, cache=False, metric=True)


# Every file of the pipeline, by the name stages use for it.
FILES: dict[str, Out] = {
    # check_params: the same few bytes whenever the params are valid, so that a valid change
    # reruns only the stages that read it; cached, so that `dvc checkout` restores it
    "params_checked": Out("artifacts/params_checked.txt"),
    # prepare_data
    "train_set": Out("data/prepared/train.pt"),
    "test_set": Out("data/prepared/test.pt"),
    # train
    "model": Out("artifacts/train/model.pt"),
    "train_log": Out("artifacts/train/log.json"),
    # train_log: the committed copies of train's log, written from the cached one
    "history": kept("artifacts/train/history.csv"),
    "train_metrics": metric("artifacts/metrics/train.json"),
    # extract_features
    "train_features": Out("artifacts/features/train.pt"),
    "test_features": Out("artifacts/features/test.pt"),
    # rof_sweep
    "rof_units": kept("artifacts/rof/units.json"),
    "rof_roles": kept("artifacts/rof/unit_roles.csv"),
    "rof_curve_train": kept("artifacts/rof/curve_train.csv"),
    "rof_curve_test": kept("artifacts/rof/curve_test.csv"),
    "rof_counts": kept("artifacts/rof/category_counts.csv"),
    "rof_metrics": metric("artifacts/metrics/rof.json"),
    # layer_rof
    "layer_rof_dir": kept("artifacts/layer_rof"),
    "layer_rof_metrics": metric("artifacts/metrics/layer_rof.json"),
    # influential_filters
    "influence_sets": kept("artifacts/influence/sets.json"),
    "influence_by_k": kept("artifacts/influence/by_k.csv"),
    "influence_by_class": kept("artifacts/influence/by_class.csv"),
    "influence_units": kept("artifacts/influence/units.csv"),
    "influence_metrics": metric("artifacts/metrics/influence.json"),
    # finetune_decomposed
    "finetune_curve": kept("artifacts/finetune/curve.csv"),
    "finetune_metrics": metric("artifacts/metrics/finetune.json"),
    # probe_concepts
    "probe": Out("data/probe/probe.pt"),
    "probe_figure": kept("artifacts/plots/probe_concepts.png"),
    # dissect, dissect_report
    "tallies": Out("artifacts/dissect/tallies.pt"),
    "dissect_layers": kept("artifacts/dissect/layers"),
    "dissect_roles": kept("artifacts/dissect/unit_roles.csv"),
    "dissect_concepts_figure": kept("artifacts/plots/dissect_concepts.png"),
    "dissect_strips_figure": kept("artifacts/plots/dissect_strips.png"),
    "dissect_metrics": metric("artifacts/metrics/dissect.json"),
    # compose
    "formulas": kept("artifacts/compose/formulas.csv"),
    "formula_masks": Out("artifacts/compose/top_masks.pt"),
    "compose_figure": kept("artifacts/plots/compose_lengths.png"),
    "compose_metrics": metric("artifacts/metrics/compose.json"),
    # clip_dissect
    "clip_layers": kept("artifacts/clip_dissect/layers"),
    "clip_descriptions": kept("artifacts/clip_dissect/descriptions.csv"),
    "clip_figure": kept("artifacts/plots/clip_dissect_top.png"),
    "clip_metrics": metric("artifacts/metrics/clip_dissect.json"),
    # ablate
    "ablation": Out("artifacts/ablation.pt"),
    # evaluate
    "evaluation": kept("artifacts/evaluation"),
    "evaluation_metrics": metric("artifacts/metrics/evaluation.json"),
    # compare_models
    "compare_table": kept("artifacts/compare/models.csv"),
    "compare_figure": kept("artifacts/plots/compare_models.png"),
    "compare_metrics": metric("artifacts/metrics/compare.json"),
    # featurevis: small PNGs, one per selected unit, committed to be compared across runs
    "featurevis_dir": kept("artifacts/featurevis"),
    "featurevis_metrics": metric("artifacts/metrics/featurevis.json"),
    # report
    "site": Out("artifacts/report"),
    "units_table": kept("artifacts/units.csv"),
    "report_metrics": metric("artifacts/metrics/report.json"),
    # plot
    "rof_figure_pdf": Out("artifacts/plots/rof_curve_turning_points.pdf"),
    "rof_figure": kept("artifacts/plots/rof_curve_turning_points.png"),
    "categories_figure": kept("artifacts/plots/unit_categories.png"),
    # the study's aggregate (its cells are the stages above, each under its own folder)
    "study_runs": Out("artifacts/study/runs"),
    "study_summary": kept("artifacts/study/summary.csv"),
    "study_table": kept("artifacts/study/summary.md"),
    "study_figure": kept("artifacts/study/ratios_vs_gap.png"),
    "study_metrics": metric("artifacts/metrics/study.json"),
}

# Where data.source torchvision downloads to (relative to the working directory; not a DVC output).
RAW_DIR = Path("data/raw")

# A study cell's folder (the run dir of its stages), as the aggregate and study/dvc.yaml spell it.
STUDY_CELL = "artifacts/study/runs/noise{noise}_seed{seed}"


# What every stage that runs a model reads of `compute`: not the engine keys (engine, scheduler,
# workers), which change where the work runs and never what it writes, so changing them reruns
# nothing.
COMPUTE = ("compute.device", "compute.precision", "compute.threads")


@dataclass(frozen=True)
class Stage:
    name: str
    params: tuple[str, ...]                # sections or section.key
    deps: tuple[str, ...]                  # names in FILES
    outs: tuple[str, ...]
    comment: str = ""                      # written above the stage in dvc.yaml
    module: str = ""                       # default stages.<name>
    study_overrides: tuple[str, ...] = field(default=())  # --set ... per study cell
    whole_params: bool = False             # its params are every key of the file
    # deps and params (of those above) read only where present: a dep kept in a pipeline with the stage
    # writing it, a param where another stage of the pipeline reads its section (pipeline_stage)
    optional: tuple[str, ...] = field(default=())

    @property
    def script(self) -> str:
        return self.module or f"stages.{self.name}"


STAGES: dict[str, Stage] = {s.name: s for s in (
    # Every other stage depends on its output (netunits/dvc_files.py adds it), so DVC runs it first
    # and a rejected value stops the run before DVC removes any other stage's outputs.
    Stage("check_params", (), (), ("params_checked",), whole_params=True,
          comment="every section of the params file checked before any other stage runs (all of them depend on\n"
                  "its output); its params are the whole file, so a misspelt section reruns it too"),
    Stage("prepare_data", ("data",), (), ("train_set", "test_set"),
          study_overrides=("data.label_noise=${item.noise}", "data.seed=${item.seed}")),
    Stage("train", ("train", *COMPUTE), ("train_set", "test_set"), ("model", "train_log"),
          comment="Every output cached, so that `dvc checkout` restores all of them after a failed run.",
          study_overrides=("train.seed=${item.seed}",)),
    Stage("train_log", (), ("train_log",), ("history", "train_metrics"),
          comment="train's log as the committed CSV and metrics (the titled definitions under `plots:` render the\n"
                  "CSV); a train run that fails leaves them in place: DVC removes a stage's outputs only when it\n"
                  "runs that stage"),
    Stage("extract_features", ("extract_features", *COMPUTE), ("model", "train_set", "test_set"),
          ("train_features", "test_features")),
    Stage("rof_sweep", ("rof",), ("model", "train_features", "test_features"),
          ("rof_units", "rof_roles", "rof_curve_train", "rof_curve_test", "rof_counts", "rof_metrics")),
    Stage("layer_rof", ("layer_rof", "rof.turning_point", "rof.acc_tolerance", "rof.loss_tolerance", *COMPUTE),
          ("model", "train_set", "test_set"), ("layer_rof_dir", "layer_rof_metrics"),
          comment="ROF at layers with spatial maps: a grid of K refined around the turning points, roles per layer"),
    Stage("influential_filters", ("influence",), ("model", "train_features", "test_features", "rof_units", "rof_roles"),
          ("influence_sets", "influence_by_k", "influence_by_class", "influence_units", "influence_metrics")),
    Stage("finetune_decomposed", ("finetune", "extract_features.batch_size", *COMPUTE),
          ("model", "train_set", "test_set", "influence_sets"), ("finetune_curve", "finetune_metrics"),
          comment="\"Decomposing the Deep\"'s last experiment: the decomposed network trained end to end; its\n"
                  "test accuracy at epoch 0 is influential_filters' at finetune.k"),
    Stage("probe_concepts", ("probe", "data.dataset", "data.source", "data.dir", "data.train_size", "data.test_size",
                             "data.selection", "data.seed", "data.image_size"), (), ("probe", "probe_figure")),
    Stage("dissect", ("dissect.layers", "dissect.quantile", "dissect.top_images", "dissect.batch_size", *COMPUTE),
          ("model", "probe"), ("tallies",),
          comment="the activation passes; dissect_report turns their counts into answers, so changing\n"
                  "dissect.iou_threshold reruns only the report"),
    Stage("dissect_report", ("dissect.iou_threshold",), ("model", "tallies", "probe", "rof_roles", "layer_rof_dir"),
          ("dissect_layers", "dissect_roles", "dissect_concepts_figure", "dissect_strips_figure", "dissect_metrics")),
    Stage("compose", ("compose", *COMPUTE), ("model", "probe", "tallies"),
          ("formulas", "formula_masks", "compose_figure", "compose_metrics"),
          comment="compositional explanations: a formula over concepts per unit, on dissect's thresholds"),
    Stage("clip_dissect", ("clip_dissect", *COMPUTE), ("model", "probe", "dissect_layers"),
          ("clip_layers", "clip_descriptions", "clip_figure", "clip_metrics"),
          comment="CLIP-Dissect: open-vocabulary descriptions by soft-WPMI; the concept and weights files that\n"
                  "clip_dissect.concepts and .weights name are params, not deps (their sha256 is in the metrics)"),
    Stage("ablate", ("ablate", "evaluate.heldout_fraction", "evaluate.seed", "dissect.layers", *COMPUTE),
          ("model", "probe"), ("ablation",),
          comment="each dissected unit zeroed on evaluate's held-out probe images: the drop per class"),
    Stage("evaluate", ("evaluate", "dissect.layers", "dissect.quantile", "dissect.iou_threshold", "compose",
                       "clip_dissect", *COMPUTE),
          ("model", "probe", "tallies", "ablation", "rof_roles", "layer_rof_dir", "influence_units"),
          ("evaluation", "evaluation_metrics"),
          comment="which answers can be trusted: held-out scores, null networks, causal agreement"),
    Stage("compare_models", ("compare", "train", "data.label_noise", "data.seed", "dissect.layers", "dissect.quantile",
                             "dissect.iou_threshold", "evaluate.heldout_fraction", "evaluate.seed", "evaluate.fdr",
                             "evaluate.min_coverage", "evaluate.batch_size", "clip_dissect.pool", *COMPUTE),
          ("model", "train_set", "test_set", "probe", "train_metrics"),
          ("compare_table", "compare_figure", "compare_metrics"),
          comment="networks side by side on the probe: other training seeds, label noise, random weights"),
    Stage("featurevis", ("featurevis", *COMPUTE), ("model", "rof_roles", "layer_rof_dir", "dissect_layers"),
          ("featurevis_dir", "featurevis_metrics"),
          comment="feature visualization: an input optimised per selected unit (by default units of every ROF role,\n"
                  "the best detectors first), as small PNGs"),
    # every section the pages' numbers depend on: the index shows their sha256
    Stage("report", ("data", "train", "compute", "extract_features", "rof", "layer_rof", "influence", "probe",
                     "dissect", "compose", "clip_dissect", "evaluate", "featurevis", "report"),
          ("model", "rof_roles", "rof_curve_train", "rof_curve_test", "layer_rof_dir", "dissect_layers", "tallies",
           "probe", "influence_units", "formulas", "formula_masks", "clip_layers", "evaluation", "evaluation_metrics",
           "featurevis_dir", "featurevis_metrics"),
          ("site", "units_table", "report_metrics"), optional=("evaluation", "evaluation_metrics", "evaluate"),
          comment="the unit explorer: every method's answer per unit, as a static site"),
    Stage("plot", ("plot", "train.arch"), ("rof_curve_train", "rof_curve_test", "rof_units", "rof_metrics",
                                           "train_metrics"),
          ("rof_figure_pdf", "rof_figure", "categories_figure")),
    Stage("study_aggregate", ("grid", "aggregate"), ("study_runs",),
          ("study_summary", "study_table", "study_figure", "study_metrics")),
)}


# The stages of each pipeline (dvc.yaml, cifar/dvc.yaml, study/dvc.yaml), by the params file it reads.
PIPELINE_STAGES: dict[str, tuple[str, ...]] = {
    "params.yaml": ("check_params", "prepare_data", "train", "train_log", "extract_features", "rof_sweep", "layer_rof",
                    "influential_filters", "finetune_decomposed", "probe_concepts", "dissect", "dissect_report",
                    "compose", "clip_dissect", "ablate", "evaluate", "compare_models", "featurevis", "report", "plot"),
    # no ablate, evaluate or compare_models: the unit explorer shows every other method without them
    "cifar/params.yaml": ("check_params", "prepare_data", "train", "train_log", "extract_features", "rof_sweep",
                          "layer_rof", "influential_filters", "finetune_decomposed", "probe_concepts", "dissect",
                          "dissect_report", "compose", "clip_dissect", "featurevis", "report", "plot"),
    # the study's cells need no train_log: the aggregate reads only their rof.json
    "study/params.yaml": ("check_params", "prepare_data", "train", "extract_features", "rof_sweep", "study_aggregate"),
}


def pipeline_stage(name: str, params_file: str) -> Stage:
    """The stage as the pipeline reading `params_file` runs it: an optional dep only where a stage of
    the pipeline writes it, an optional param only where another stage of it reads that section."""
    stage = STAGES[name]
    if not stage.optional:
        return stage
    names = PIPELINE_STAGES[params_file]
    written = {out for other in names for out in STAGES[other].outs}
    read = {p.split(".")[0] for other in names if other != name for p in STAGES[other].params}
    return replace(stage, deps=tuple(d for d in stage.deps if d not in stage.optional or d in written),
                   params=tuple(p for p in stage.params if p not in stage.optional or p.split(".")[0] in read))


def pipeline_sections(params_file: str | Path) -> tuple[str, ...]:
    """The params sections the stages of the pipeline reading `params_file` need; none for a file
    no pipeline reads."""
    params_file = Path(params_file).as_posix().removeprefix("./")
    stages = PIPELINE_STAGES.get(params_file, ())
    sections = [p.split(".")[0] for name in stages for p in pipeline_stage(name, params_file).params]
    return tuple(dict.fromkeys(sections))


def stage_paths(stage: str, run_dir: Path | str = ".") -> dict[str, Path]:
    """A stage's deps and outs by name, under run_dir."""
    entry = STAGES[stage]
    return {name: Path(run_dir) / FILES[name].path for name in entry.deps + entry.outs}


def stage_outs(stage: str, run_dir: Path | str = ".") -> list[Path]:
    """A stage's outputs under run_dir (for remove_stale_temps before it writes)."""
    return [Path(run_dir) / FILES[name].path for name in STAGES[stage].outs]


def study_cell(run_dir: Path | str, noise: float, seed: int) -> Path:
    """The folder of the study's cell for this label noise and seed."""
    return Path(run_dir) / STUDY_CELL.format(noise=noise, seed=seed)


if __name__ == "__main__":
    from netunits.dvc_files import main
    raise SystemExit(main())
