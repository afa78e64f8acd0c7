"""One call per stage, for notebooks and scripts: `run_<stage>(inputs, config, ...)` returns a
dataclass of the tensors, tables and figures the stage writes, with no file touched.

Each stage's module netunits.api.<stage> also has `load_<stage>_inputs(paths)` and
`write_<stage>(result, paths)`, which the stage script calls around it. Every `run_<stage>` is
reachable here (`from netunits.api import run_rof_sweep`); a module is imported when its function
is first asked for, so that a stage script importing its own module loads no other stage's code.
"""
import importlib
import pkgutil

__all__ = sorted(f"run_{module.name}" for module in pkgutil.iter_modules(__path__))


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.{name[len('run_'):]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
