"""Stage check_params: the whole params file checked before any other stage runs.

Reads the params file (every key: its DVC params are the whole file) and requires the sections
its pipeline's stages read (netunits/stage_table.py, PIPELINE_STAGES); writes
artifacts/params_checked.txt, the same bytes for any valid params. Every other stage depends on
that file, so DVC runs this stage first and a rejected value stops the run before DVC removes
any other stage's outputs.
"""
from netunits.api.check_params import run_check_params, write_check_params
from netunits.files import remove_stale_temps
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.stage_table import pipeline_sections, stage_outs, stage_paths


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, *pipeline_sections(args.params))
    remove_stale_temps(*stage_outs("check_params", args.run_dir))
    result = run_check_params(params)
    write_check_params(result, stage_paths("check_params", args.run_dir))
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
