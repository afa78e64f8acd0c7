"""One library call per stage: `run_<stage>(inputs, config, ...)` returns what the stage writes,
from tensors and a config, with no files; `load_<stage>_inputs` and `write_<stage>` do the files."""
from netunits.api.report import run_report  # noqa: F401
