"""Stage evaluate: which answers can be trusted: every method's answer per unit chosen on the fit
part of a class-balanced split of the probe set and scored on the held-out part (its own score and
the AUC of the unit's per-image maximum against the answer's presence, with Mann-Whitney's p),
against null networks (random weights; permuted probe annotations) with Benjamini-Hochberg, and
against what zeroing the unit does to each class.

Reads params evaluate, dissect.layers, dissect.quantile, dissect.iou_threshold, compose,
clip_dissect and compute, the checkpoint, the probe set, dissect's tallies (the thresholds), ROF's
roles and the influential filters' table; writes artifacts/evaluation/<method>.csv, the figure
artifacts/evaluation/auc_vs_null.png and artifacts/metrics/evaluation.json (with the checkpoint's
sha256, so the report can tell these answers from another checkpoint's). The work is
netunits.api.evaluate.run_evaluate.
"""
from netunits.api.evaluate import Settings, load_evaluate_inputs, run_evaluate, write_evaluate
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "evaluate", "dissect", "compose", "clip_dissect", "compute")
    paths = stage_paths("evaluate", args.run_dir)
    inputs = load_evaluate_inputs(paths)
    runtime = resolve_compute(params.compute, analysis=True, source=params.source)
    settings = Settings(params.evaluate, params.dissect, params.compose, params.clip_dissect)
    result = run_evaluate(inputs, settings, runtime, source=params.source)
    write_evaluate(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
