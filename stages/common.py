"""What every stage shares: params and their validation, errors, atomic writes, safe loading,
the model, the device and precision, seeding and progress bars.

Stages import from here; nothing here knows about a particular stage's outputs.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from stages.gemm_conv import use_small_map_convs
from stages.resnet import resnet18

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = "params.yaml"
N_CLASSES = 10
MNIST_TRAIN_TOTAL = 60_000
MNIST_TEST_TOTAL = 10_000
# ResNet18 halves the resolution five times; below 32 px layer4 sees padding, not the digit.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 448


class PipelineError(Exception):
    """An error meant for the user: one line naming the key or file, what was wrong, what is allowed."""


# --------------------------------------------------------------------------------------------
# params
# --------------------------------------------------------------------------------------------
def int_range(lo, hi=None):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    return check, f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"


def float_range(lo, hi, lo_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and v <= hi
    return check, f"a number in {'(' if lo_open else '['}{lo}, {hi}]"


def choice(*options):
    return (lambda v: v in options), "one of " + ", ".join(map(str, options))


def _device(v):
    return isinstance(v, str) and (v in ("auto", "cpu", "cuda", "mps") or
                                   (v.startswith("cuda:") and v[5:].isdigit()))


def _threads(v):
    return v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 256)


def list_of(check, allowed, unique=True):
    def check_list(v):
        return isinstance(v, list) and len(v) > 0 and all(check(x) for x in v) and \
            (not unique or len(set(v)) == len(v))
    return check_list, f"a non-empty list of distinct values, each {allowed}"


def _path(v):
    return isinstance(v, str) and v.strip() != ""


DEVICE = (_device, "auto, cpu, cuda, cuda:N or mps")
PRECISION = choice("auto", "fp32", "bf16")
THREADS = (_threads, "auto or an integer from 1 to 256")
SEED = int_range(0, 2**31 - 1)

# One entry per params.yaml section; each stage reads exactly one section (see dvc.yaml).
SCHEMA = {
    "data": {
        "source": choice("packaged", "torchvision", "idx"),
        "idx_dir": (_path, "a folder path (used when source is idx)"),
        "train_size": int_range(1, MNIST_TRAIN_TOTAL),
        "test_size": int_range(1, MNIST_TEST_TOTAL),
        "selection": choice("first", "stratified"),
        "image_size": int_range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
        "seed": SEED,
    },
    "train": {
        "epochs": int_range(1, 1000),
        "batch_size": int_range(2, 65536),
        "lr": float_range(0, 10, lo_open=True),
        "lr_schedule": choice("constant", "cosine"),
        "seed": SEED,
        "device": DEVICE,
        "precision": PRECISION,
        "threads": THREADS,
        "eval_batch_size": int_range(1, 65536),
    },
    "extract_features": {
        "batch_size": int_range(1, 65536),
        "device": DEVICE,
        "precision": PRECISION,
        "threads": THREADS,
    },
    "rof": {
        "ranking": choice("l1", "random", "ascending"),
        "turning_point": choice("exact", "tolerance"),
        "acc_tolerance": float_range(0, 1),
        "loss_tolerance": float_range(0, 10),
        "seed": SEED,
    },
    "plot": {
        "dpi": int_range(30, 600),
    },
}


def validate_params(params, schema=SCHEMA, source=PARAMS_FILE):
    """Check every section and key of a params mapping; raise PipelineError on the first problem.

    All sections are checked, not only the caller's, so a typo anywhere stops the first stage
    that runs instead of surfacing after minutes of training.
    """
    if not isinstance(params, dict):
        raise PipelineError(f"{source}: expected a mapping of sections ({', '.join(schema)})")
    for section in params:
        if section not in schema:
            raise PipelineError(f"{source}: unknown section '{section}'; allowed: {', '.join(schema)}")
    for section, keys in schema.items():
        values = params.get(section)
        if not isinstance(values, dict):
            raise PipelineError(f"{source}: section '{section}' is missing or not a mapping; "
                                f"it needs the keys {', '.join(keys)}")
        for key in values:
            if key not in keys:
                raise PipelineError(f"{source}: unknown key '{section}.{key}'; allowed keys: "
                                    f"{', '.join(keys)}")
        for key, (check, allowed) in keys.items():
            if key not in values:
                raise PipelineError(f"{source}: missing key '{section}.{key}'; it must be {allowed}")
            if not check(values[key]):
                raise PipelineError(f"{source}: '{section}.{key}' is {values[key]!r}; it must be {allowed}")
    return params


def load_params(section, path=None, schema=SCHEMA):
    """The validated section of a params file (the whole file is validated against `schema`)."""
    path = Path(path or PARAMS_FILE)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found; run the stage from the project root") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return validate_params(params, schema, source=str(path))[section]


# --------------------------------------------------------------------------------------------
# running a stage
# --------------------------------------------------------------------------------------------
def run_stage(main):
    """Run a stage's main(); a PipelineError becomes one line on stderr and exit status 2."""
    import resource
    start = time.perf_counter()
    try:
        main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    print(f"{Path(main.__globals__['__file__']).stem} done in {time.perf_counter() - start:.1f} s wall, "
          f"peak RSS {peak_mib:.0f} MiB", file=sys.stderr)


def progress(iterable, desc, total=None):
    """A tqdm bar on a terminal, silence elsewhere (logs, CI, DVC's captured output)."""
    from tqdm import tqdm  # comes with DVC
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not sys.stderr.isatty())


# --------------------------------------------------------------------------------------------
# atomic writes: a killed stage leaves the previous file or none, never a truncated one
# --------------------------------------------------------------------------------------------
def _temp_name(path):
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_stale_temps(*paths):
    """Delete temporary files a killed earlier run left next to these outputs."""
    for path in map(Path, paths):
        for stale in glob.glob(str(path.with_name(f".{path.name}.tmp-*"))):
            os.unlink(stale)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the same folder; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # Fault injection for the kill test (tests/test_pipeline.py): hold the finished
        # temporary file for this many seconds before the rename.
        hold = os.environ.get("ROFPIPE_HOLD_BEFORE_RENAME")
        if hold:
            time.sleep(float(hold))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_torch(obj, path):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_text(text, path):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(obj, path):
    write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def write_csv(rows, path):
    """rows: a list of dicts with the same keys; floats are written with 6 significant digits."""
    header = list(rows[0])
    lines = [",".join(header)]
    for row in rows:
        lines.append(",".join(f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k])
                              for k in header))
    write_text("\n".join(lines) + "\n", path)


def read_csv(path):
    """The inverse of write_csv for numeric tables: a dict of column name -> list of floats."""
    path = Path(path)
    try:
        header, *lines = path.read_text().strip().splitlines()
        names = header.split(",")
        columns = {name: [] for name in names}
        for line in lines:
            for name, value in zip(names, line.split(","), strict=True):
                columns[name].append(float(value))
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found; run `dvc repro` to create it") from None
    except ValueError as exc:
        raise PipelineError(f"{path}: not a numeric CSV table ({exc}); rerun `dvc repro -f` "
                            f"for the stage that writes it") from None
    return columns


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# safe loading
# --------------------------------------------------------------------------------------------
def load_checked(path, required, what):
    """torch.load a cached dict with weights_only=True and check that it holds `required`.

    `required` maps key -> a predicate on the value; any failure is one PipelineError line.
    """
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: {what} not found; run `dvc repro` to create it")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, wrong format, pickled code: all unusable
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{path}: corrupt or not a {what} ({reason[:200]}); "
                            f"restore it with `dvc checkout` or rebuild it with `dvc repro -f`") from None
    if not isinstance(obj, dict):
        raise PipelineError(f"{path}: not a {what} (expected a dict, found {type(obj).__name__})")
    for key, check in required.items():
        if key not in obj or not check(obj[key]):
            raise PipelineError(f"{path}: not a valid {what}: entry '{key}' is missing or malformed; "
                                f"rebuild it with `dvc repro -f`")
    return obj


# --------------------------------------------------------------------------------------------
# torchvision on a CPU-only torch
# --------------------------------------------------------------------------------------------
_TORCHVISION_SHIM = []


def _torchvision_extension_loads():
    import importlib.util
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise PipelineError("torchvision is not installed; run `make run` or "
                            "`pip install -r requirements.txt`")
    libraries = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))
    if not libraries:
        return False
    try:
        torch.ops.load_library(libraries[0])
        return True
    except OSError:  # e.g. a CUDA build of torchvision next to a CPU build of torch
        return False


def torchvision_models():
    """Import torchvision.models, defining the nms/qnms op schemas first if its C ops are missing.

    torchvision registers fake (meta) kernels for torchvision::nms and ::qnms at import time,
    which fails with "operator torchvision::nms does not exist" when its compiled extension
    cannot load (a CUDA wheel beside CPU torch). The schemas are all that registration needs;
    the ops themselves are never called here. This is the only place the project does this.
    """
    if "torchvision" not in sys.modules and not _TORCHVISION_SHIM:
        if not _op_defined("torchvision::nms") and not _torchvision_extension_loads():
            library = torch.library.Library("torchvision", "DEF")
            library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TORCHVISION_SHIM.append(library)
    import torchvision.models
    return torchvision.models


def _op_defined(name):
    namespace, op = name.split("::")
    try:
        getattr(getattr(torch.ops, namespace), op)
        return True
    except (AttributeError, RuntimeError):
        return False


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
class Float32Head(torch.nn.Linear):
    """The final Linear(512, 10), always evaluated in fp32 even under autocast.

    ROF re-applies this layer to the cached fp32 features in float64; keeping the model's own
    head in fp32 makes "all 512 units retrieved" reproduce the model's accuracy exactly.
    State-dict keys are those of a plain nn.Linear (fc.weight, fc.bias).
    """

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float())


def build_model(n_classes=N_CLASSES):
    """torchvision resnet18(weights=None) with fc replaced by Linear(512, n_classes) (seed 000).

    The network is stages/resnet.py's copy of torchvision's (bit-identical weights for a seed,
    without torchvision's import cost). Its convolutions on small maps compute as one matrix
    product under CPU bf16 autocast (stages/gemm_conv.py: same parameters and state dict;
    training steps 18 to 25% faster here).
    """
    model = resnet18()
    model.fc = Float32Head(model.fc.in_features, n_classes)
    return use_small_map_convs(model)


CHECKPOINT_KEYS = {
    "arch": lambda v: v == "resnet18",
    "n_classes": lambda v: isinstance(v, int) and v > 0,
    "image_size": lambda v: isinstance(v, int) and v > 0,
    "in_channels": lambda v: v == 3,
    "state_dict": lambda v: isinstance(v, dict) and "fc.weight" in v,
}


def load_checkpoint(path):
    """(model in eval mode on cpu, checkpoint dict); the checkpoint file's sha256 is under 'sha256'."""
    checkpoint = load_checked(path, CHECKPOINT_KEYS, "model checkpoint")
    model = build_model(checkpoint["n_classes"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise PipelineError(f"{path}: checkpoint does not fit a resnet18 "
                            f"({str(exc).splitlines()[0]}); rebuild it with `dvc repro -f train`") from None
    checkpoint["sha256"] = file_sha256(path)
    return model.eval(), checkpoint


def images_to_input(images_u8, device, channels_last):
    """uint8 N x 1 x H x W -> float N x 3 x H x W in [0, 1] (seed: ToTensor, Grayscale(3), no
    normalisation). The three grey channels are made here, never stored."""
    x = images_u8.to(device, non_blocking=True).float().div_(255.0).expand(-1, 3, -1, -1)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)


# --------------------------------------------------------------------------------------------
# device, precision, threads, seeds
# --------------------------------------------------------------------------------------------
def choose_device(name, key):
    """'auto' picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name.startswith("cuda") and not cuda:
        raise PipelineError(f"params.yaml: '{key}' is {name!r} but no CUDA device is available; "
                            f"use auto or cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise PipelineError(f"params.yaml: '{key}' is {name!r} but only "
                            f"{torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not mps:
        raise PipelineError(f"params.yaml: '{key}' is 'mps' but no MPS device is available; "
                            f"use auto or cpu")
    return torch.device(name)


def bf16_supported(device):
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # True only with native bf16 instructions (AVX-512 BF16 / AMX); emulated bf16 is slower.
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def choose_precision(name, device, key):
    """'auto' picks bf16 autocast where the hardware runs it natively, else fp32."""
    if name == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if name == "bf16" and device.type == "mps":
        raise PipelineError(f"params.yaml: '{key}' is 'bf16', which this project does not run on mps; "
                            f"use fp32 or auto")
    return name


def autocast(device, precision):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads):
    """Set the intra-op thread count ('auto': torch's default, one per physical core)."""
    if threads != "auto":
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def release_free_memory():
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing).

    glibc keeps freed memory for reuse. Between phases whose tensors differ in size (a training
    step, then an evaluation at another batch size) that kept memory cannot be reused, and the
    heap grows instead: calling this before each evaluation took 40-110 MiB off the training
    stage's peak here, for a few milliseconds.
    """
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc
        pass


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new uninitialised tensor with NaN, which only matters
    # to code that reads memory before writing it (none here: the same bits either way, tested).
    # That is one more pass over every activation and gradient of a training step (about 8% of
    # a step here, interleaved A/B) and it makes the max-pool's never-read stand-in resident.
    torch.utils.deterministic.fill_uninitialized_memory = False
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


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


@torch.no_grad()
def forward_features(model, images_u8, batch_size, device, precision, desc="forward"):
    """Eval-mode forward pass: (pooled features N x 512 fp32 from a forward hook on
    model.avgpool, logits N x n_classes fp32), both on the cpu."""
    pooled, logits = [], []
    hook = model.avgpool.register_forward_hook(lambda _m, _i, out: pooled.append(out.flatten(1).float().cpu()))
    model.eval()
    try:
        for start in progress(range(0, len(images_u8), batch_size), desc):
            x = images_to_input(images_u8[start:start + batch_size], device, channels_last=True)
            with autocast(device, precision):
                logits.append(model(x).float().cpu())
    finally:
        hook.remove()
    return torch.cat(pooled), torch.cat(logits)


PREPARED_KEYS = {
    "images": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 4
    and v.shape[1] == 1,
    "labels": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.int64 and v.dim() == 1,
    "indices": lambda v: isinstance(v, torch.Tensor) and v.dim() == 1,
    "image_size": lambda v: isinstance(v, int),
}


def load_prepared(path):
    """A prepare_data output, checked: uint8 images N x 1 x S x S with N labels in 0..9."""
    subset = load_checked(path, PREPARED_KEYS, "prepared MNIST subset")
    if len(subset["images"]) != len(subset["labels"]) or len(subset["labels"]) == 0 or \
            subset["labels"].min() < 0 or subset["labels"].max() >= N_CLASSES:
        raise PipelineError(f"{path}: images and labels do not pair up or labels are outside 0..9; "
                            f"rebuild it with `dvc repro -f prepare_data`")
    return subset
