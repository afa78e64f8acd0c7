"""Stage dissect_report: network dissection's answers from the tallies: per unit its best concepts
and IoU, detectors (best IoU at or above dissect.iou_threshold), unique concepts per layer, the
units of the block that feeds the final layer (ROF's units) joined with ROF's roles, each layer's
channels with their own ROF roles (layer_rof's), and the figures.

Reads params dissect.iou_threshold, artifacts/train/model.pt (its architecture), artifacts/dissect/tallies.pt,
data/probe/probe.pt (for the image strips), artifacts/rof/unit_roles.csv and artifacts/layer_rof/<layer>_roles.csv
where layer_rof computed the layer; writes artifacts/dissect/layers/<layer>.csv per layer (ending with the layer's
own ROF roles, layer_role_acc and layer_role_loss: "not computed" where layer_rof did not compute it),
artifacts/dissect/unit_roles.csv (ROF's table with the concept and IoU),
artifacts/metrics/dissect.json, artifacts/plots/dissect_concepts.png and artifacts/plots/dissect_strips.png.
The work is netunits.api.dissect_report.run_dissect_report.
"""
from netunits.api.dissect_report import load_dissect_report_inputs, run_dissect_report, write_dissect_report
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "dissect")
    paths = stage_paths("dissect_report", args.run_dir)
    inputs = load_dissect_report_inputs(paths, source=params.source)
    result = run_dissect_report(inputs, params.dissect)
    write_dissect_report(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
