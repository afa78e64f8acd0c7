"""The three DVC pipelines written from the stage table (netunits/stage_table.py):

dvc.yaml         every stage, files at the project root
cifar/dvc.yaml   the stages on the released CIFAR-10 ResNet20 but ablate, evaluate and
                 compare_models, files under cifar/
study/dvc.yaml   the generalization study: the first four stages as a DVC matrix over the grid
                 of study/params.yaml (one folder per cell), and the aggregate
docs/pipeline.md dvc.yaml's graph (mermaid) and what each stage writes

Every pipeline starts with check_params on its own params file; every other stage depends on
its output.

`python -m netunits.stage_table` writes them; `--check` exits 1 where a committed file differs.
Each stage's code deps are its script and every stages/ or netunits/ module it imports,
transitively, so that DVC reruns a stage exactly when code it runs has changed.
"""
from __future__ import annotations

import argparse
import ast
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

from netunits.stage_table import FILES, PIPELINE_STAGES, STAGES, STUDY_CELL, Stage, pipeline_stage

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("stages", "netunits")
# The architecture registry imports each model's code inside its builder, so that reading an
# architecture's facts (pooled layer, last block) loads no model code: those imports are deps of
# the stages that build a model (the ones reading `compute`) only.
REGISTRY = "netunits/models/registry.py"
# Files a module reads from the package at run time (not imports): deps of every stage using it.
PACKAGE_DATA = {"netunits/report.py": ("netunits/templates/report",)}


# --------------------------------------------------------------------------------------------
# code deps
# --------------------------------------------------------------------------------------------
def _module_file(name: str, root: Path) -> Path | None:
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
        isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"


@functools.lru_cache(maxsize=None)
def _imported_names(path: Path, root: Path, builds_model: bool) -> list[str]:
    """Project modules `path` imports, anywhere in the file but its `if __name__ == ...` block."""
    tree = _parse(path)
    lazy_model_code = path.relative_to(root).as_posix() == REGISTRY and not builds_model
    nodes = []
    for statement in tree.body:
        if _is_main_guard(statement):
            continue
        if lazy_model_code and isinstance(statement, ast.FunctionDef):
            continue
        nodes += list(ast.walk(statement))
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return [n for n in names if n.split(".")[0] in PROJECT_PACKAGES]


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _has_code(init: Path) -> bool:
    """A package's __init__.py runs before any of its modules: a dep if it holds more than a docstring."""
    body = _parse(init).body
    return any(not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in body)


def code_deps(script: str, builds_model: bool, root: Path = ROOT) -> list[str]:
    """The script (stages/<name>.py) first, then every project module it imports, sorted."""
    seen, todo = set(), [root / script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path, root, builds_model):
            parts = name.split(".")
            todo += [f for f in (_module_file(".".join(parts[:n]), root) for n in range(1, len(parts) + 1)) if f]
    modules = {p.relative_to(root).as_posix() for p in seen if p.name != "__init__.py" or _has_code(p)}
    data = {folder for module in modules for folder in PACKAGE_DATA.get(module, ())}
    return [script] + sorted(modules - {script}) + sorted(data)


def stage_code(stage: Stage, root: Path = ROOT) -> list[str]:
    reads_compute = any(p == "compute" or p.startswith("compute.") for p in stage.params)
    return code_deps(stage.script.replace(".", "/") + ".py", reads_compute, root)


# --------------------------------------------------------------------------------------------
# YAML, written by hand: comments, flow lists and the order of keys as a person would write them
# --------------------------------------------------------------------------------------------
def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()]


def _params(stage: Stage, params_file: str | None) -> list[str]:
    if stage.whole_params:    # a file with no list of keys: DVC tracks every key in it
        return ["    params:", f"      - {params_file or 'params.yaml'}:"]
    if params_file is None:
        return ["    params:"] + [f"      - {p}" for p in stage.params]
    return ["    params:", f"      - {params_file}:"] + [f"          - {p}" for p in stage.params]


def _outs(stage: Stage, prefix: str, all_cached: bool) -> list[str]:
    outs, metrics = [], []
    for name in stage.outs:
        out = FILES[name]
        path = prefix + out.path
        if all_cached:
            outs.append(f"      - {path}")
        elif out.metric:
            metrics += [f"      - {path}:", "          cache: false"]
        elif not out.cache:
            outs += [f"      - {path}:", "          cache: false"]
        else:
            outs.append(f"      - {path}")
    return ["    outs:"] + outs + (["    metrics:"] + metrics if metrics else [])


def _stage(stage: Stage, name: str, cmd: list[str], prefix: str, params_file: str | None, all_cached: bool = False,
           head: list[str] = (), checked: str = "") -> list[str]:
    """`checked`: check_params' output, a dep of every other stage (so that DVC runs the check first)."""
    lines = _comment(stage.comment, "  ") if stage.comment and not all_cached else []
    lines += [f"  {name}:", *head, *cmd, "    deps:"]
    lines += [f"      - {d}" for d in stage_code(stage)] + [f"      - {prefix}{FILES[d].path}" for d in stage.deps]
    lines += [f"      - {checked}"] * bool(checked and stage.name != "check_params")
    params = _params(stage, params_file) if stage.params or stage.whole_params else []
    return lines + params + _outs(stage, prefix, all_cached)


@dataclass(frozen=True)
class Plot:
    title: str                     # the name `dvc plots show` lists
    template: str
    x: str
    y: dict[str, object]           # a name in FILES -> a column or a list of columns
    caption: str = ""              # the figure's title
    x_label: str = ""
    y_label: str = ""


def _plots(plots: list[Plot | str], prefix: str) -> list[str]:
    lines = []
    for plot in plots:
        if isinstance(plot, str):          # a figure a stage draws, shown as it is
            lines.append(f"  - {prefix}{FILES[plot].path}")
            continue
        lines += [f"  - {plot.title}:", f"      template: {plot.template}", f"      x: {plot.x}", "      y:"]
        for name, columns in plot.y.items():
            shown = f"[{', '.join(columns)}]" if isinstance(columns, list) else columns
            lines.append(f"        {prefix}{FILES[name].path}: {shown}")
        if plot.caption:
            lines.append(f'      title: "{plot.caption}"')
        lines += [f"      x_label: {plot.x_label}"] * bool(plot.x_label)
        lines += [f"      y_label: {plot.y_label}"] * bool(plot.y_label)
    return lines


MAIN_PLOTS: list[Plot | str] = [
    Plot("ROF accuracy (L1 order)", "linear", "n_units", {"rof_curve_train": "accuracy", "rof_curve_test": "accuracy"},
         "ROF: accuracy vs units retrieved (train and test subsets)", "units activated", "accuracy"),
    Plot("ROF loss (L1 order)", "linear", "n_units", {"rof_curve_train": "loss", "rof_curve_test": "loss"},
         "ROF: cross-entropy vs units retrieved (train and test subsets)", "units activated", "cross-entropy loss"),
    Plot("ROF controls (test)", "linear", "n_units",
         {"rof_curve_test": ["accuracy_l1", "accuracy_random", "accuracy_ascending"]},
         "ROF on the test subset: L1 order against random and ascending orders", "units activated", "accuracy"),
    Plot("Training history", "linear", "epoch", {"history": ["train_accuracy", "test_accuracy"]},
         "Training: running train accuracy and test accuracy per epoch", "epoch", "accuracy"),
    Plot("Unit categories by accuracy turning point", "bar_horizontal", "acc", {"rof_counts": "category"},
         "Units per role (turning point chosen by rof.turning_point, accuracy)", "units", "category"),
    Plot("Unit categories by loss turning point", "bar_horizontal", "loss", {"rof_counts": "category"},
         "Units per role (turning point chosen by rof.turning_point, loss)", "units", "category"),
    Plot("Influential filters (decomposed final layer)", "linear", "k",
         {"influence_by_k": ["accuracy_full", "accuracy_decomposed", "kept_set_noised", "kept_others_noised"]},
         "Test accuracy with the final layer rebuilt from each class's k influential units; kept under noise",
         "units per class (k)", "accuracy / share still predicted"),
    Plot("Fine-tuning the decomposed network", "linear", "epoch",
         {"finetune_curve": ["test_accuracy", "full_accuracy"]},
         "Test accuracy of the decomposed network (k units per class) per epoch of fine-tuning, and the full "
         "network's", "epoch, 0 before training", "test accuracy"),
    "rof_figure", "categories_figure", "probe_figure", "dissect_concepts_figure", "dissect_strips_figure",
    "clip_figure", "compose_figure",
]

CIFAR_PLOTS: list[Plot | str] = [
    Plot("ROF accuracy, ResNet20 on CIFAR-10 (L1 order)", "linear", "n_units",
         {"rof_curve_train": "accuracy", "rof_curve_test": "accuracy"}, "", "units activated", "accuracy"),
    Plot("Influential filters, ResNet20 on CIFAR-10", "linear", "k",
         {"influence_by_k": ["accuracy_full", "accuracy_decomposed", "kept_set_noised", "kept_others_noised"]},
         "", "units per class (k)", "accuracy / share still predicted"),
    Plot("Fine-tuning the decomposed network, ResNet20 on CIFAR-10", "linear", "epoch",
         {"finetune_curve": ["test_accuracy", "full_accuracy"]}, "", "epoch, 0 before training", "test accuracy"),
    "rof_figure", "categories_figure", "probe_figure", "dissect_concepts_figure", "dissect_strips_figure",
    "clip_figure", "compose_figure",
]

STUDY_PLOTS: list[Plot | str] = [
    Plot("Test accuracy against label noise", "scatter", "label_noise", {"study_summary": "test_accuracy"},
         "Generalization study: clean test accuracy per run"),
    Plot("Role ratio (both, by accuracy) against the gap", "scatter", "generalization_gap",
         {"study_summary": "both_ratio_acc"}, "Share of units in both U0 sets against the generalization gap"),
    "study_figure",
]

GENERATED = ("Written by `python -m netunits.stage_table` from netunits/stage_table.py: edit the table, not\n"
             "this file (tests/test_stage_table.py checks that they agree).")

MAIN_STAGES = PIPELINE_STAGES["params.yaml"]
CIFAR_STAGES = PIPELINE_STAGES["cifar/params.yaml"]
# run once per cell of the grid; check_params and the aggregate once
STUDY_CELL_STAGES = tuple(name for name in PIPELINE_STAGES["study/params.yaml"]
                          if name not in ("check_params", "study_aggregate"))
CHECKED = FILES["params_checked"].path


def main_pipeline() -> str:
    lines = _comment(GENERATED + "\nEach stage lists the code it runs (its script and the stages/ and netunits/ "
                     "modules that\nimports, read from the imports), the files and the params it reads.", "")
    lines += ["stages:"]
    for name in MAIN_STAGES:
        lines += _stage(STAGES[name], name, [f"    cmd: python -m {STAGES[name].script}"], "", None,
                        checked=CHECKED) + [""]
    lines += ["# `dvc plots show` / `dvc plots diff` render these."]
    return "\n".join(lines + ["plots:"] + _plots(MAIN_PLOTS, "")) + "\n"


def cifar_pipeline() -> str:
    lines = _comment("The released CIFAR-10 ResNet20 of \"Decomposing the Deep\": `make cifar` (= dvc repro "
                     "cifar/dvc.yaml).\nThe pipeline's own stages with cifar/params.yaml, every file under cifar/ "
                     "(data/ and\nartifacts/, as at the top level). Stages run from the project root (wdir: ..).\n"
                     + GENERATED, "") + ["stages:"]
    for name in CIFAR_STAGES:
        cmd = [f"    cmd: python -m {STAGES[name].script} --params cifar/params.yaml --run-dir cifar"]
        lines += _stage(pipeline_stage(name, "cifar/params.yaml"), name, cmd, "cifar/", "cifar/params.yaml",
                        head=["    wdir: .."], checked="cifar/" + CHECKED) + [""]
    return "\n".join(lines + ["plots:"] + _plots(CIFAR_PLOTS, "")) + "\n"


def study_pipeline() -> str:
    cell = STUDY_CELL.format(noise="${item.noise}", seed="${item.seed}")
    lines = _comment("The generalization study: `make study` (= dvc repro study/dvc.yaml). A plain `dvc repro`\n"
                     "runs only the main pipeline in ../dvc.yaml. Every cell of the grid (a label-noise fraction "
                     "and\na seed) runs the pipeline's own stage scripts under " + STUDY_CELL.format(
                         noise="<f>", seed="<s>") + "/,\nwith the sections of study/params.yaml and the cell's noise "
                     "and seed set on the command line.\nStages run from the project root (wdir: ..). The cells' "
                     "outputs are cached by DVC, not committed;\nthe aggregate's are committed.\n" + GENERATED, "")
    lines += ["stages:"]
    # the check's files under study/, beside the params file it checks (as cifar/'s under cifar/)
    check = STAGES["check_params"]
    checked = "study/" + CHECKED
    lines += _stage(check, "check_params",
                    [f"    cmd: python -m {check.script} --params study/params.yaml --run-dir study"], "study/",
                    "study/params.yaml", head=["    wdir: .."]) + [""]
    matrix = ["    matrix:", "      noise: ${grid.label_noise}", "      seed: ${grid.seeds}", "    wdir: .."]
    for name in STUDY_CELL_STAGES:
        stage = STAGES[name]
        command = f"python -m {stage.script} --params study/params.yaml --run-dir {cell}"
        command += "".join(f" --set {override}" for override in stage.study_overrides)
        lines += _stage(stage, name, ["    cmd: >-", f"      {command}"], f"{cell}/", "study/params.yaml",
                        all_cached=True, head=matrix, checked=checked) + [""]
    aggregate = STAGES["study_aggregate"]
    lines += _stage(aggregate, "aggregate", [f"    cmd: python -m {aggregate.script} --params study/params.yaml"], "",
                    "study/params.yaml", head=["    wdir: .."], checked=checked) + [""]
    return "\n".join(lines + ["plots:"] + _plots(STUDY_PLOTS, "../")) + "\n"


def _params_text(stage: Stage) -> str:
    return "the whole file" if stage.whole_params else ", ".join(f"`{p}`" for p in stage.params) or "(none)"


def pipeline_doc() -> str:
    """docs/pipeline.md: the main pipeline's graph as a mermaid flowchart (GitHub draws it), an
    edge from the stage writing a file to each stage reading it, and what each stage writes."""
    producer = {out: name for name in MAIN_STAGES for out in STAGES[name].outs}
    edges = dict.fromkeys(f"  {producer[dep]} --> {name}" for name in MAIN_STAGES for dep in STAGES[name].deps)
    rows = [f"| `{name}` | {_params_text(STAGES[name])} | "
            f"{', '.join(f'`{FILES[o].path}`' for o in STAGES[name].outs)} |" for name in MAIN_STAGES]
    lines = ["# The pipeline (dvc.yaml)", "",
             "<!-- " + GENERATED.replace("\n", " ").replace("this file", "this page") + " -->", "",
             "`check_params` runs first: every other stage depends on its output (those edges are not drawn), "
             "so a rejected value stops `dvc repro` before DVC removes any other stage's outputs.", "",
             "```mermaid", "flowchart TD", *edges, "```", "",
             "| stage | params | writes |", "|---|---|---|", *rows]
    return "\n".join(lines) + "\n"


PIPELINES = {"dvc.yaml": main_pipeline, "cifar/dvc.yaml": cifar_pipeline, "study/dvc.yaml": study_pipeline,
             "docs/pipeline.md": pipeline_doc}


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description="Write dvc.yaml, cifar/dvc.yaml, study/dvc.yaml and "
                                                 "docs/pipeline.md from the stage table.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed file differs")
    args = parser.parse_args(argv)
    stale = []
    for name, render in PIPELINES.items():
        text, path = render(), root / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print(f"{', '.join(stale)}: differ from the stage table; run `python -m netunits.stage_table`",
              file=sys.stderr)
        return 1
    print(("stale: " if args.check else "written: ") + (", ".join(stale) or "none"))
    return 0
