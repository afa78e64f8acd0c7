"""Stage report: the unit explorer, a static site under artifacts/report/ that opens from the file
system, and the same table as artifacts/units.csv.

One row per unit of the block that feeds the final layer (ROF's units; `last_block` of the
checkpoint's architecture) with its ROF roles and ranks, its own ROF role at the layer (layer_rof's;
"not computed" where layer_rof.layers does not list it), its dissection concept and IoU, the
classes it is influential for, its compositional formula, its CLIP-Dissect description and, for
the units featurevis visualized, a thumbnail of its feature visualization; a page per unit (its
top images with its mask and its feature visualization beside them, its formula's mask, its
activation histogram, its place on the ROF curves) and a page per method's own table, linked both
ways. The index records the
checkpoint's sha256, a sha256 of the params in effect and the CPU.

Reads params `report` (thumbnail), ROF's unit roles and curves (needed) and, where present,
dissection's tables and tallies with the probe set, layer_rof's roles of the layer, the influence
table, the formulas with their masks, CLIP-Dissect's table, featurevis' images and the evaluate
stage's tables and metrics (beside each method's
answer its held-out AUC and significance against the null networks; on the index a scoreboard per
method and layer; on each unit's page its scores, p values and causal effect). A method's output
that is missing, made from another checkpoint or without the layer is named on the index and its
columns are left out; an unreadable checkpoint leaves out every column computed from it. Writes
artifacts/report/, artifacts/units.csv and artifacts/metrics/report.json (per ROF role: detector
share, mean best IoU, share influential for some class, mean formula IoU, share significant per
evaluated method; the rank correlation of L1 rank and best IoU). Runs no model.
"""
from netunits.api.report import load_report_inputs, run_report, write_report
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "report")
    paths = stage_paths("report", args.run_dir)
    inputs = load_report_inputs(paths, params, tuple(args.overrides))
    result = run_report(inputs, params.report)
    write_report(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
