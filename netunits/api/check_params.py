"""Checking a whole params file before any other stage runs.

DVC removes a stage's outputs before it runs the stage, so a value the stage then rejects costs
those outputs (a trained checkpoint, uncached logs). Every stage of the three pipelines depends
on check_params' output, which DVC therefore runs first: a rejected value stops `dvc repro`
with every other output in place. Its output holds the same bytes for any valid params, so
that a valid change reruns only the stages that read the changed keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netunits.data.registry import check_request, get_dataset
from netunits.errors import PipelineError
from netunits.files import write_text
from netunits.models.registry import get_architecture
from netunits.params import Params


@dataclass
class CheckParamsResult:
    source: str                        # the params file
    sections: tuple[str, ...]          # the sections it holds, each valid

    def text(self) -> str:
        """The stage's output: names only, no values, so that any valid params give these bytes."""
        return f"{self.source}: every section valid ({', '.join(self.sections)})\n"

    def summary(self) -> str:
        return f"{self.source}: {len(self.sections)} sections valid ({', '.join(self.sections)})"


def run_check_params(params: Params) -> CheckParamsResult:
    """The checks beyond the schema (netunits.params validated the file on loading) that need no
    data and no model: the registries' names and what they allow."""
    source = params.source
    if params.data is not None:
        check_request(get_dataset(params.data.dataset, source=source), params.data, source)
    if params.train is not None:
        architecture = get_architecture(params.train.arch, source=source)
        layers = params.extract_features.layers if params.extract_features is not None else None
        if layers is not None and architecture.pooled_layer not in layers:
            raise PipelineError(f"{source}: 'extract_features.layers' is {layers!r}; it must include "
                                f"{architecture.pooled_layer}, the layer whose units ROF and the influential filters "
                                f"read (the final layer's input)")
    sections = tuple(name for name in type(params).model_fields if getattr(params, name) is not None)
    return CheckParamsResult(source, sections)


def write_check_params(result: CheckParamsResult, paths: dict[str, Path]) -> None:
    write_text(result.text(), paths["params_checked"])
