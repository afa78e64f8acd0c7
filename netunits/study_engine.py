"""The generalization study's grid on the engine: `python -m netunits.study_engine` (or `make
study-dask`).

The commands study/dvc.yaml runs, without DVC: check_params here first; then every cell of the
grid as one task on the engine that study/params.yaml's compute section names (netunits.engine),
running the cell's stages in turn (prepare_data, train, extract_features, rof_sweep, each with
the cell's --set overrides and run dir artifacts/study/runs/noise<f>_seed<s>, as subprocesses
from the project root); then, once every cell has finished, the aggregate here. The files are
those `dvc repro study/dvc.yaml` writes; the workers must see the project's folder at the same
path (a shared file system) with the same code and packages. `dvc commit study/dvc.yaml`
records them in study/dvc.lock afterwards.

A stage that fails is one line naming the cell, the command and the stage's own error line;
the aggregate then does not run (cells already finished keep their files).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from netunits.dvc_files import STUDY_CELL_STAGES
from netunits.engine import open_engine
from netunits.errors import PipelineError
from netunits.params import load_params
from netunits.runtime import run_stage
from netunits.stage_table import STAGES, STUDY_CELL, pipeline_sections

PARAMS = "study/params.yaml"


def cell_commands(noise: float, seed: int, params_file: str = PARAMS) -> list[str]:
    """One cell's commands, as study/dvc.yaml's matrix writes them for this noise and seed."""
    cell = STUDY_CELL.format(noise=noise, seed=seed)
    commands = []
    for name in STUDY_CELL_STAGES:
        stage = STAGES[name]
        command = f"python -m {stage.script} --params {params_file} --run-dir {cell}"
        command += "".join(f" --set {override}" for override in stage.study_overrides)
        commands.append(command.replace("${item.noise}", str(noise)).replace("${item.seed}", str(seed)))
    return commands


def run_commands(root: str, commands: list[str], what: str) -> str:
    """Run each command in `root` in turn with this Python; a failure is one line naming it."""
    for command in commands:
        argv = shlex.split(command)
        result = subprocess.run([sys.executable, *argv[1:]], cwd=root, capture_output=True, text=True)
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            reason = lines[-1].removeprefix("error: ") if lines else "no message"
            raise PipelineError(f"{what}: `{command}` failed (exit status {result.returncode}): {reason}")
    return what


def run_study(params_file: str = PARAMS) -> list[str]:
    """From the project root: check_params, every cell on the engine, the aggregate; returns the
    cells' names."""
    root = Path.cwd().resolve()
    params = load_params(params_file, required=pipeline_sections(params_file))
    run_commands(str(root), [f"python -m {STAGES['check_params'].script} --params {params_file} --run-dir "
                             f"{Path(params_file).parent}"], "check_params")
    cells = [(noise, seed) for noise in params.grid.label_noise for seed in params.grid.seeds]
    names = [f"study cell {STUDY_CELL.format(noise=noise, seed=seed)}" for noise, seed in cells]
    with open_engine(params.compute, params_file) as engine:
        done = engine.map(run_commands, [(str(root), cell_commands(noise, seed, params_file), name)
                                         for (noise, seed), name in zip(cells, names)], names)
    run_commands(str(root), [f"python -m {STAGES['study_aggregate'].script} --params {params_file}"], "aggregate")
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the study's grid on compute.engine, then its aggregate.")
    parser.add_argument("--params", default=PARAMS, help=f"the study's params file (default {PARAMS})")
    args = parser.parse_args(argv)
    done = run_study(args.params)
    print(f"{len(done)} cells and the aggregate: artifacts/study/summary.csv")


if __name__ == "__main__":
    run_stage(main)
