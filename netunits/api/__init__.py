"""One library call per stage: `run_<stage>(inputs, config, ...)` returns what the stage writes,
from tensors and a config, with no files; `load_<stage>_inputs` and `write_<stage>` do the files."""
from netunits.api.clip_dissect import run_clip_dissect  # noqa: F401
from netunits.api.dissect import run_dissect  # noqa: F401
from netunits.api.dissect_report import run_dissect_report  # noqa: F401
