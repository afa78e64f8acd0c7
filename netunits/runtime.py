"""Running a stage: its command line, one-line errors, device, precision, threads, seeding,
memory guards and progress bars."""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netunits.errors import PipelineError
from netunits.params import PARAMS_FILE, Compute, Params, load_params


# --------------------------------------------------------------------------------------------
# a stage's command line
# --------------------------------------------------------------------------------------------
def stage_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The options every stage takes:

    --params FILE   the params file (default params.yaml)
    --set S.K=V     override one param (repeatable); the study sets each cell's seed and noise so
    --run-dir DIR   read and write every file of the stage under DIR (default: the project root)
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one param (repeatable)")
    parser.add_argument("--run-dir", default=".", type=Path,
                        help="folder under which the stage reads and writes its files (default: .)")
    args = parser.parse_args(argv)
    return args


def stage_config(args: argparse.Namespace, *sections: str) -> Params:
    """The params file of `args` (with its --set overrides), validated; `sections` must be there."""
    return load_params(args.params, args.overrides, sections)


def run_stage(main: Callable, argv: list[str] | None = None) -> None:
    """Run a stage's main(argv); a PipelineError becomes one line on stderr and exit status 2."""
    start = time.perf_counter()
    try:
        main(argv)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    print(f"{Path(main.__globals__['__file__']).stem} done in {time.perf_counter() - start:.1f} s wall, "
          f"peak RSS {peak_mib:.0f} MiB", file=sys.stderr)


def progress(iterable, desc, total=None):
    """A tqdm bar on a terminal, silence elsewhere (logs, CI, DVC's captured output)."""
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not sys.stderr.isatty())


# --------------------------------------------------------------------------------------------
# device, precision, threads, seeds
# --------------------------------------------------------------------------------------------
def choose_device(name: str, key: str = "compute.device", source: str = PARAMS_FILE) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name.startswith("cuda") and not cuda:
        raise PipelineError(f"{source}: '{key}' is {name!r} but no CUDA device is available; "
                            f"use auto or cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise PipelineError(f"{source}: '{key}' is {name!r} but only "
                            f"{torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not mps:
        raise PipelineError(f"{source}: '{key}' is 'mps' but no MPS device is available; "
                            f"use auto or cpu")
    return torch.device(name)


def bf16_supported(device):
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # True only with native bf16 instructions (AVX-512 BF16 / AMX); emulated bf16 is slower.
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def choose_precision(name: str, device: torch.device, key: str = "compute.precision", analysis: bool = False,
                     source: str = PARAMS_FILE) -> str:
    """'auto' picks bf16 autocast where the hardware runs it natively, else fp32; for an analysis
    stage (`analysis`) 'auto' is fp32: bf16's ties at a threshold flip some units' answers."""
    if name == "auto":
        return "bf16" if not analysis and bf16_supported(device) else "fp32"
    if name == "bf16" and device.type == "mps":
        raise PipelineError(f"{source}: '{key}' is 'bf16', which this project does not run on mps; "
                            f"use fp32 or auto")
    return name


@dataclass(frozen=True)
class Runtime:
    """Where a stage runs its model and in which arithmetic."""
    device: torch.device
    precision: str          # "fp32" | "bf16" (autocast)


def resolve_compute(compute: Compute, analysis: bool, source: str = PARAMS_FILE) -> Runtime:
    """The device and precision `compute` asks for, checked against this machine; also sets the
    thread count. `analysis`: dissect, compose, clip_dissect and the report (fp32 under auto);
    train and extract_features take bf16 under auto where the hardware runs it natively."""
    device = choose_device(compute.device, "compute.device", source)
    precision = choose_precision(compute.precision, device, "compute.precision", analysis, source)
    set_threads(compute.threads)
    return Runtime(device, precision)


def autocast(device, precision):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads):
    """Set the intra-op thread count ('auto': torch's default, one per physical core)."""
    if threads != "auto":
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new uninitialised tensor with NaN, which only matters
    # to code that reads memory before writing it (none here: the same bits either way, tested).
    # That is one more pass over every activation and gradient of a training step (about 8% of
    # a step, interleaved A/B) and it makes the max-pool's never-read stand-in resident.
    torch.utils.deterministic.fill_uninitialized_memory = False
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------
def release_free_memory():
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing).

    glibc keeps freed memory for reuse. Between phases whose tensors differ in size (a training
    step, then an evaluation at another batch size) that kept memory cannot be reused, and the
    heap grows instead: calling this before each evaluation takes 40-110 MiB off the training
    stage's peak, for a few milliseconds.
    """
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc
        pass


def available_memory_bytes():
    """MemAvailable from /proc/meminfo, or None where there is no such file."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(n_bytes, folder, what):
    """Refuse up front a cache that would not fit in the available memory or disk."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free_disk = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    memory = available_memory_bytes()
    gib = 1024**3
    if memory is not None and n_bytes > 0.8 * memory:
        raise PipelineError(f"{what} would need about {n_bytes / gib:.2f} GiB of memory but only "
                            f"{memory / gib:.2f} GiB is available; lower the sizes in params.yaml")
    if n_bytes > free_disk:
        raise PipelineError(f"{what} would need about {n_bytes / gib:.2f} GiB on disk but {folder} "
                            f"has {free_disk / gib:.2f} GiB free; lower the sizes in params.yaml")
