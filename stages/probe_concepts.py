"""Stage probe_concepts: the probe set network dissection compares units with.

probe.source mnist: the first probe.size official MNIST test digits that the ROF test subset
does not use (with data.selection first: those after it), at data.image_size, with the concepts of
netunits/concepts.py computed at probe.mask_size. probe.source cifar10: the first probe.size
CIFAR-10 training images that the ROF training subset does not use, with the colour (named by
probe.colour_rule), edge, lightness, texture and position masks and the image-level labels of
netunits/concepts_colour.py. probe.source broden: the first probe.size images of a Broden-format
folder (probe.dir; netunits/data/broden.py). Reads params `probe` and `data`; writes
data/probe/probe.pt (netunits/data/probe.py) and artifacts/plots/probe_concepts.png (a few
images and their masks).
"""
from netunits.api.probe_concepts import load_probe_concepts_inputs, run_probe_concepts, write_probe_concepts
from netunits.files import remove_stale_temps
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import RAW_DIR, stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "probe", "data")
    paths = stage_paths("probe_concepts", args.run_dir)
    remove_stale_temps(*stage_outs("probe_concepts", args.run_dir))
    inputs = load_probe_concepts_inputs(params.probe, params.data, RAW_DIR, params.source,
                                        out_dir=paths["probe"].parent)
    result = run_probe_concepts(inputs, params.probe, params.data, params.source)
    write_probe_concepts(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
