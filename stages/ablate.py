"""Stage ablate: each unit of dissect.layers zeroed on the held-out probe images of evaluate's
split, and the drop in accuracy and logit margin per class; the block feeding the final layer
exactly on every held-out image, earlier layers by a forward pass of the rest of the network per
unit on ablate.images_per_class held-out images per class.

Reads params `ablate`, evaluate.heldout_fraction, evaluate.seed, dissect.layers and `compute`,
artifacts/train/model.pt and data/probe/probe.pt; writes artifacts/ablation.pt (cached), which
evaluate reads for its causal agreement. The work is netunits.api.ablate.run_ablate.
"""
from netunits.api.ablate import load_ablate_inputs, run_ablate, write_ablate
from netunits.runtime import resolve_compute, run_stage, stage_args, stage_config
from netunits.stage_table import stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "ablate", "evaluate", "dissect", "compute")
    paths = stage_paths("ablate", args.run_dir)
    runtime = resolve_compute(params.compute, analysis=True, source=params.source)
    inputs = load_ablate_inputs(paths)
    result = run_ablate(inputs, params.ablate, params.evaluate, list(params.dissect.layers), runtime,
                        source=params.source)
    write_ablate(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
