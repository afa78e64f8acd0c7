"""Stage prepare_data: a data set's train and test subsets as compact uint8 tensors.

Reads params `data`; writes data/prepared/{train,test}.pt in the prepared format
(netunits/data/prepared.py): images at data.image_size with the data set's own channels,
labels (with data.label_noise of the training labels replaced by wrong ones), indices into
the official split.
"""
from netunits.api.prepare_data import load_prepare_data_inputs, run_prepare_data, write_prepare_data
from netunits.files import remove_stale_temps
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import RAW_DIR, stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "data")
    paths = stage_paths("prepare_data", args.run_dir)
    remove_stale_temps(*stage_outs("prepare_data", args.run_dir))
    inputs = load_prepare_data_inputs(params.data, RAW_DIR, params.source, out_dir=paths["train_set"].parent)
    result = run_prepare_data(inputs, params.data, params.source)
    write_prepare_data(result, paths)
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
