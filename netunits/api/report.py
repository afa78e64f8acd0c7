"""The report stage as one library call: the unit explorer, every method's answer per unit of the
block that feeds the final layer (ROF's units), as a static site, a table and metrics.

    inputs = load_report_inputs(stage_paths("report", "."), params)
    result = run_report(inputs, params.report)
    result.rows[7]                        # unit 7: roles, ranks, concept, classes, formula, CLIP
    result.files["units/7.html"]          # its page; result.files["units/7.png"]: its strip (PNG)

Beside ROF's roles of the pooled units, each unit's own ROF role at the layer (layer_rof's, "not
computed" where layer_rof.layers does not list the layer), and, for the units the featurevis
stage visualized, its feature visualization (a thumbnail on the index, beside the top images on
its page; "not selected" for the others).

Where the evaluate stage ran on the same checkpoint, each method's held-out AUC and significance
against the null networks stand beside its answer, and the index has a scoreboard per method and
layer. A method's output that is missing, made from another checkpoint or without this layer is named
in `notes` and its columns are left out; a checkpoint that cannot be read leaves out every column
computed from it (all but the unit numbers). The report runs no model.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from netunits.data.probe import load_probe, unpack_masks
from netunits.errors import PipelineError
from netunits.files import load_checked, read_csv, read_json, write_csv, write_json
from netunits.layer_roles import NOT_COMPUTED, read_layer_roles, roles_or_not_computed
from netunits.methods.dissection import unit_masks
from netunits.methods.rof import CATEGORIES
from netunits.models.checkpoint import load_checkpoint_file
from netunits.models.registry import ARCHITECTURES
from netunits.report import STATIC_FILES, curve_chart, histogram_chart, mark, png_bytes, render, strip_image
from netunits.study import spearman

Table = dict[str, list[str]]

# The methods whose own tables get a page, in the order the pages name them.
METHOD_LABELS = {"rof": "ROF roles", "dissection": "network dissection", "influence": "influential filters",
                 "compose": "compositional explanations", "clip_dissect": "CLIP-Dissect"}
# The methods the evaluate stage scores, in its order: their label and the short name of the index's
# headings (the significance mark and held-out AUC columns stand right after the method's own answer).
EVALUATED = {"dissection": ("network dissection", "concept"), "formula": ("compositional explanations", "formula"),
             "clip_dissect": ("CLIP-Dissect", "CLIP"), "invert": ("INVERT", "INVERT")}
# evaluate's columns for a unit's ablation, filled only on the block feeding the final layer.
CAUSAL_FIELDS = {"names_class": "class its answer names", "margin_effect": "margin drop when zeroed",
                 "accuracy_effect": "accuracy drop when zeroed", "most_hurt": "class hurt most"}
# Params sections that nothing on the report's pages depends on (figures and the study).
PARAMS_NOT_HASHED = ("plot", "grid", "aggregate")
# Words of a formula that are not concept names (netunits.methods.compose's connectors).
CONNECTOR_WORDS = {"AND", "OR", "NOT", "WITH", "CLOSE", "TO"}


@dataclass
class Dissection:
    """Network dissection of the layer: dissect_report's table, dissect's tallies of the layer
    (top images, their maps, thresholds, histograms), the mask size and the probe images."""
    table: Table
    tally: dict
    mask_size: int
    images: torch.Tensor                  # uint8 n x c x h x w


@dataclass
class FeatureVis:
    """The featurevis stage's images of the layer: PNG bytes and the activation reached, per
    visualized unit, and how the units were chosen (its metrics' selection and units)."""
    pngs: dict[int, bytes]
    activation: dict[int, float]
    selection: str


@dataclass
class MethodTable:
    """A method's own per-unit table (the rows of the layer), and where it came from."""
    key: str
    table: Table
    source: str                           # the file, as the index names it
    href: str                             # the file, relative to the site's methods/ folder


@dataclass
class RunRecord:
    """Which run the pages show: the checkpoint (sha256 None when it cannot be read), the params in
    effect and the CPU the report was made on."""
    checkpoint: str
    checkpoint_sha256: str | None
    arch: str | None
    params_file: str
    overrides: tuple[str, ...]
    params_sha256: str
    cpu: str


@dataclass
class ReportInputs:
    """Every method's answer for the units of `layer` (None where left out, with a note)."""
    n_units: int
    layer: str | None
    run: RunRecord
    notes: list[str]
    roles: Table | None                   # ROF's unit_roles.csv
    curves: dict[str, list[float]] | None  # ROF's accuracy curves, per subset
    dissection: Dissection | None = None
    influence: Table | None = None        # influential_filters' units.csv
    formulas: Table | None = None         # compose's rows of the layer
    formula_masks: tuple[torch.Tensor, int] | None = None  # packed masks (units x k x bytes), their size
    clip: Table | None = None             # CLIP-Dissect's rows of the layer
    evaluation: dict[str, Table] = field(default_factory=dict)  # evaluate's rows of the layer, per method
    scoreboard: dict | None = None        # evaluate's metrics (evaluation.json), of this checkpoint
    layer_roles: dict[str, list[str]] | None = None  # layer_rof's roles of the layer (layer_roles.COLUMNS)
    featurevis: FeatureVis | None = None  # the featurevis stage's images of the layer
    tables: list[MethodTable] = field(default_factory=list)


@dataclass
class ReportResult:
    """rows: artifacts/units.csv; metrics: artifacts/metrics/report.json; files: the site, each
    path under artifacts/report/ with its text (pages, style, script) or PNG bytes (strips)."""
    layer: str | None
    rows: list[dict]
    metrics: dict
    notes: list[str]
    files: dict[str, str | bytes]

    def summary(self) -> str:
        size = sum(len(v if isinstance(v, bytes) else v.encode()) for v in self.files.values()) / 2**20
        line = (f"report: {len(self.rows)} units of {self.layer or 'an unknown layer'}, "
                f"{size:.1f} MiB of pages and images")
        # one line per note: each names what is left out and why, and may hold a "; " of its own
        return "\n".join([line] + self.notes)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def cpu_kind() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def params_sha256(params: Any) -> str:
    """sha256 of the params in effect (after --set overrides) as sorted JSON, every section the
    report's numbers depend on: all but PARAMS_NOT_HASHED (the stage depends on the same ones,
    so the hash on the index is never stale)."""
    values = params.model_dump(mode="json") if hasattr(params, "model_dump") else dict(params)
    kept = {name: value for name, value in values.items() if name not in PARAMS_NOT_HASHED and value is not None}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def _layer_rows(path: Path, layer: str, n_units: int, what: str, notes: list[str]) -> Table | None:
    """The rows of `layer` in a per-unit table (with a layer column or one file per layer), in
    unit order, or None with a note."""
    try:
        table = read_csv(path, numeric=False)
    except PipelineError as exc:
        notes.append(f"{what} left out: {exc}")
        return None
    rows = [i for i, name in enumerate(table.get("layer", [layer] * len(table["unit"]))) if name == layer]
    if [table["unit"][i] for i in rows] != [str(u) for u in range(n_units)]:
        notes.append(f"{what} left out: {path.name} has no row for each of the {n_units} units of {layer}")
        return None
    return {key: [values[i] for i in rows] for key, values in table.items()}


def _dissection(paths: dict[str, Path], layer: str, n_units: int, sha256: str, notes: list[str]) -> Dissection | None:
    what = "network dissection"
    try:
        tallies = load_checked(paths["tallies"], {"per_layer": lambda v: isinstance(v, dict)}, "dissection tallies")
    except PipelineError as exc:
        notes.append(f"{what} left out: {exc}")
        return None
    if tallies.get("checkpoint_sha256") != sha256:
        notes.append(f"{what} left out: {paths['tallies']}: made from another checkpoint than {paths['model']}")
        return None
    if layer not in tallies["per_layer"]:
        notes.append(f"{what} left out: {paths['tallies']}: layer {layer} was not dissected")
        return None
    table = _layer_rows(paths["dissect_layers"] / f"{layer}.csv", layer, n_units, what, notes)
    if table is None:
        return None
    try:
        probe = load_probe(paths["probe"])
    except PipelineError as exc:
        notes.append(f"{what} left out: {exc}")
        return None
    return Dissection(table, tallies["per_layer"][layer], tallies["mask_size"], probe["images"])


def _formula_masks(path: Path, layer: str, tally: dict, sha256: str, notes: list[str]):
    """Each formula's packed masks on the unit's top images and their size, or None with a note:
    the compose stage's, when it used this checkpoint and these top images."""
    try:
        saved = load_checked(path, {"per_layer": lambda v: isinstance(v, dict)}, "formula masks")
    except PipelineError as exc:
        notes.append(f"formula masks left out: {exc}")
        return None
    entry = saved["per_layer"].get(layer)
    if saved.get("checkpoint_sha256") != sha256 or entry is None or not entry["top_images"].equal(tally["top_images"]):
        notes.append(f"formula masks left out: {path} is not of this checkpoint's {layer} and its top images")
        return None
    return entry["masks"], entry["size"]


def _influence(path: Path, roles: Table, notes: list[str]) -> Table | None:
    what = "influential filters"
    try:
        table = read_csv(path, numeric=False)
    except PipelineError as exc:
        notes.append(f"{what} left out: {exc}")
        return None
    if table.get("category_acc") != roles["category_acc"] or not any(k.startswith("influential_for") for k in table):
        notes.append(f"{what} left out: {path} comes from another ROF run")
        return None
    return table


def _evaluation(paths: dict[str, Path], layer: str, n_units: int, sha256: str,
                notes: list[str]) -> tuple[dict | None, dict[str, Table]]:
    """evaluate's metrics and its rows of `layer` per method, when made from this checkpoint;
    else (None, {}) with a note. A method whose table lacks the layer's units is left out alone."""
    what = "evaluation (held-out AUC, significance, scoreboard)"
    if not paths["evaluation_metrics"].exists():      # a pipeline without evaluate (cifar/dvc.yaml) or not yet run
        notes.append(f"{what} left out: {paths['evaluation_metrics']}: file not found; the evaluate stage writes it "
                     f"where its pipeline has that stage (`dvc repro evaluate`)")
        return None, {}
    try:
        metrics = read_json(paths["evaluation_metrics"])
    except PipelineError as exc:
        notes.append(f"{what} left out: {exc}")
        return None, {}
    if not isinstance(metrics, dict) or not isinstance(metrics.get("methods"), dict):
        notes.append(f"{what} left out: {paths['evaluation_metrics']}: has no per-method results; "
                     "rerun `dvc repro evaluate`")
        return None, {}
    if metrics.get("checkpoint_sha256") != sha256:
        notes.append(f"{what} left out: {paths['evaluation_metrics']}: made from another checkpoint than "
                     f"{paths['model']}; rerun `dvc repro evaluate`")
        return None, {}
    tables = {}
    for method, (label, _) in EVALUATED.items():
        if method in metrics["methods"]:
            table = _layer_rows(paths["evaluation"] / f"{method}.csv", layer, n_units, f"evaluation of {label}", notes)
            if table is not None:
                tables[method] = table
    return metrics, tables


def _layer_roles(folder: Path, layer: str, n_units: int, notes: list[str]) -> dict[str, list[str]]:
    """layer_rof's roles of the layer, NOT_COMPUTED where it has no table of it (or, with a note,
    an unusable one)."""
    try:
        roles = read_layer_roles(folder, layer, n_units)
    except PipelineError as exc:
        notes.append(f"ROF roles at {layer} (layer_rof) left out: {exc}")
        roles = None
    return roles_or_not_computed(roles, n_units)


def _featurevis(paths: dict[str, Path], layer: str, n_units: int, sha256: str, notes: list[str]) -> FeatureVis | None:
    what = "feature visualization"
    try:
        metrics = read_json(paths["featurevis_metrics"])
        table = read_csv(paths["featurevis_dir"] / "units.csv", numeric=False)
    except PipelineError as exc:
        notes.append(f"{what} left out: {exc}")
        return None
    if not isinstance(metrics, dict) or metrics.get("checkpoint_sha256") != sha256:
        notes.append(f"{what} left out: {paths['featurevis_metrics']}: made from another checkpoint than "
                     f"{paths['model']}; rerun `dvc repro featurevis`")
        return None
    if metrics.get("layer") != layer:
        notes.append(f"{what} left out: featurevis.layer is {metrics.get('layer')!r}; the explorer shows {layer}")
        return None
    pngs, activation = {}, {}
    try:
        for unit, file, value in zip(table["unit"], table["file"], table["activation"], strict=True):
            if not 0 <= int(unit) < n_units:
                raise ValueError(f"unit {unit} of {n_units}")
            pngs[int(unit)] = (paths["featurevis_dir"] / file).read_bytes()
            activation[int(unit)] = float(value)
    except (KeyError, ValueError, OSError) as exc:
        notes.append(f"{what} left out: {paths['featurevis_dir']} is incomplete ({exc}); rerun `dvc repro featurevis`")
        return None
    return FeatureVis(pngs, activation, f"{metrics.get('selection')}, {len(pngs)} of {n_units} units")


def load_report_inputs(paths: dict[str, Path], params: Any, overrides: tuple[str, ...] = ()) -> ReportInputs:
    """Every method's output for the units of the checkpoint's last block, checked against the
    checkpoint; `params` (the run's params, every section) and `overrides` are recorded on the
    index. Missing ROF tables are an error; anything else missing or mismatched is a note."""
    roles = read_csv(paths["rof_roles"], numeric=False)
    n_units = len(roles["unit"])
    notes: list[str] = []
    run = RunRecord(str(paths["model"]), None, None, getattr(params, "source", "params.yaml"), tuple(overrides),
                    params_sha256(params), cpu_kind())
    try:
        checkpoint = load_checkpoint_file(paths["model"])
        if checkpoint["arch"] not in ARCHITECTURES:
            raise PipelineError(f"{paths['model']}: architecture {checkpoint['arch']!r} is not one of "
                                f"{', '.join(ARCHITECTURES)}")
    except PipelineError as exc:
        notes.append(f"checkpoint unreadable, so every column computed from it is left out (ROF roles and ranks, "
                     f"network dissection, influential filters, compositional explanations, CLIP-Dissect, "
                     f"evaluation): {exc}")
        return ReportInputs(n_units, None, run, notes, None, None)
    run.checkpoint_sha256, run.arch = checkpoint["sha256"], checkpoint["arch"]
    layer = ARCHITECTURES[checkpoint["arch"]].last_block
    curves = {s: read_csv(paths[f"rof_curve_{s}"])["accuracy"] for s in ("train", "test")}
    inputs = ReportInputs(n_units, layer, run, notes, roles, curves)
    site_methods = paths["site"] / "methods"
    tables = {"rof": (roles, paths["rof_roles"])}

    inputs.dissection = _dissection(paths, layer, n_units, run.checkpoint_sha256, notes)
    if inputs.dissection:
        tables["dissection"] = (inputs.dissection.table, paths["dissect_layers"] / f"{layer}.csv")
    inputs.influence = _influence(paths["influence_units"], roles, notes)
    if inputs.influence:
        tables["influence"] = (inputs.influence, paths["influence_units"])
    inputs.formulas = _layer_rows(paths["formulas"], layer, n_units, "compositional explanations", notes)
    if inputs.formulas:
        tables["compose"] = (inputs.formulas, paths["formulas"])
        if inputs.dissection:
            inputs.formula_masks = _formula_masks(paths["formula_masks"], layer, inputs.dissection.tally,
                                                  run.checkpoint_sha256, notes)
    clip_path = paths["clip_layers"] / f"{layer}.csv"
    inputs.clip = _layer_rows(clip_path, layer, n_units, "CLIP-Dissect", notes)
    if inputs.clip:
        tables["clip_dissect"] = (inputs.clip, clip_path)
    inputs.scoreboard, inputs.evaluation = _evaluation(paths, layer, n_units, run.checkpoint_sha256, notes)
    inputs.layer_roles = _layer_roles(paths["layer_rof_dir"], layer, n_units, notes)
    inputs.featurevis = _featurevis(paths, layer, n_units, run.checkpoint_sha256, notes)
    inputs.tables = [MethodTable(key, table, str(source), Path(os.path.relpath(source, site_methods)).as_posix())
                     for key, (table, source) in tables.items()]
    return inputs


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
def _columns(inputs: ReportInputs) -> list[dict]:
    """The index's columns: key (units.csv's), label, numeric, help (the heading's tooltip)."""
    def column(key, label, numeric, help_text):
        return {"key": key, "label": label, "numeric": numeric, "help": help_text}
    columns = [column("unit", "unit", True, "channel of the layer; opens the unit's page")]
    if inputs.roles:
        columns += [column("role", "role (accuracy)", False, "ROF role by accuracy: both, train_only, test_only, "
                                                            "neither"),
                    column("role_loss", "role (loss)", False, "ROF role by loss"),
                    column("rank_train", "L1 rank train", True, "place in the L1 retrieval order on the train "
                                                                "subset, from 0"),
                    column("rank_test", "L1 rank test", True, "place in the L1 retrieval order on the test subset, "
                                                              "from 0")]
    if inputs.layer_roles:
        where = f"ROF at {inputs.layer} itself (layer_rof: the layer's channels kept in L1 order, the rest of the " \
            f"network run); {NOT_COMPUTED} where layer_rof.layers does not list {inputs.layer}"
        columns += [column("layer_role_acc", "layer ROF role (accuracy)", False, f"role by accuracy from {where}"),
                    column("layer_role_loss", "layer ROF role (loss)", False, f"role by loss from {where}")]
    fdr = inputs.scoreboard["fdr"] if inputs.scoreboard else None

    def evaluated(method):
        # beside the method's answer: its significance mark and held-out AUC, where evaluate scored it
        if method not in inputs.evaluation:
            return []
        label, short = EVALUATED[method]
        # INVERT has no stage of its own: its answer is evaluate's
        answer = [column("invert", "INVERT", False, "INVERT's formula, fitted on the evaluation's fit half")] \
            if method == "invert" else []
        return answer + [
            column(f"{method}_significant", f"{short} \u2713", True,
                   f"{label}: \u2713 where evaluate's answer beats every null network (Benjamini-Hochberg at "
                   f"{fdr}); hover a mark for its held-out AUC and p values"),
            column(f"{method}_heldout_auc", f"{short} held-out AUC", True,
                   f"{label}: AUC of the unit's activation for its answer on the held-out half of the probe set "
                   "(0.5: chance)")]
    if inputs.dissection:
        columns += [column("concept", "concept", False, "network dissection's best concept"),
                    column("iou", "IoU", True, "its IoU"),
                    column("detector", "detector", True, "IoU above dissect.iou_threshold")]
    columns += evaluated("dissection")
    if inputs.influence:
        columns += [column("classes", "influential for classes", False,
                           "the classes whose logit this unit is among the most influential for")]
    if inputs.formulas:
        columns += [column("formula", "formula", False, "compositional explanation (beam search over concepts)"),
                    column("formula_iou", "formula IoU", True, "its IoU")]
    columns += evaluated("formula")
    if inputs.clip:
        columns += [column("clip", "CLIP-Dissect", False, "CLIP-Dissect's description")]
    columns += evaluated("clip_dissect") + evaluated("invert")
    if inputs.featurevis:
        columns += [column("featurevis_activation", "feature vis", True,
                           "an input optimised to maximise the unit's mean activation (featurevis stage), for the "
                           f"units it selected ({inputs.featurevis.selection}); sorts by the activation reached")]
    return columns


def _rows(inputs: ReportInputs) -> list[dict]:
    """artifacts/units.csv: one row per unit, each method's answer from its own output."""
    rows = []
    influence_key = next((k for k in inputs.influence if k.startswith("influential_for")), None) \
        if inputs.influence else None
    for u in range(inputs.n_units):
        row: dict[str, Any] = {"unit": u}
        if inputs.roles:
            roles = inputs.roles
            row.update(role=roles["category_acc"][u], role_loss=roles["category_loss"][u],
                       rank_train=int(roles["rank_train"][u]), rank_test=int(roles["rank_test"][u]))
        if inputs.layer_roles:
            row.update({key: values[u] for key, values in inputs.layer_roles.items()})
        if inputs.dissection:
            table = inputs.dissection.table
            row.update(concept=table["concept"][u], iou=float(table["iou"][u]), detector=int(table["detector"][u]))
        if influence_key:
            row["classes"] = inputs.influence[influence_key][u].replace(";", " ")
        if inputs.formulas:
            row.update(formula=inputs.formulas["formula"][u], formula_iou=float(inputs.formulas["iou"][u]))
        if inputs.clip:
            row["clip"] = inputs.clip["description"][u]
        for method, table in inputs.evaluation.items():
            if method == "invert":
                row["invert"] = table["answer"][u]
            row[f"{method}_significant"] = int(table["significant"][u])
            row[f"{method}_heldout_auc"] = float(table["auc"][u])
        if inputs.featurevis:
            row["featurevis_activation"] = inputs.featurevis.activation.get(u, "")
        rows.append(row)
    return rows


def _metrics(inputs: ReportInputs, rows: list[dict]) -> dict:
    """Per ROF role: detector share, mean best IoU, share influential for some class, mean formula
    IoU, share significant per method evaluate scored; the rank correlation of L1 rank and best IoU."""
    summary: dict[str, Any] = {"layer": inputs.layer, "units": inputs.n_units, "left_out": inputs.notes,
                               "by_role": {}}
    if inputs.roles is None:
        return summary
    for role in CATEGORIES:
        members = [r for r in rows if r["role"] == role]
        entry: dict[str, Any] = {"units": len(members)}
        if inputs.dissection and members:
            entry["detector_share"] = sum(r["detector"] for r in members) / len(members)
            entry["mean_best_iou"] = sum(r["iou"] for r in members) / len(members)
        if inputs.influence and members:
            entry["influential_share"] = sum(bool(r["classes"]) for r in members) / len(members)
        if inputs.formulas and members:
            entry["mean_formula_iou"] = sum(r["formula_iou"] for r in members) / len(members)
        for method in inputs.evaluation:
            if members:
                entry[f"{method}_significant_share"] = sum(r[f"{method}_significant"] for r in members) / len(members)
        summary["by_role"][role] = entry
    if inputs.dissection:
        summary["spearman_l1_rank_train_vs_iou"] = spearman([r["rank_train"] for r in rows], [r["iou"] for r in rows])
    return summary


def classes_text(classes: str) -> str:
    """'0 3' -> 'classes 0, 3'; '7' -> 'class 7'; '' -> '' (a class named 0 is not 'none')."""
    names = classes.split()
    return f"class{'es' if len(names) > 1 else ''} {', '.join(names)}" if names else ""


def formula_concepts(formula: str) -> list[str]:
    """The concept names of a formula string such as '(hole AND digit_0) AND NOT top_half'."""
    return [word for word in re.split(r"[\s()]+", formula) if word and word not in CONNECTOR_WORDS]


def number_text(value: str, digits: int = 4) -> str:
    """A CSV number as text with `digits` significant digits; '' and words stay as they are."""
    try:
        return f"{float(value):.{digits}g}"
    except ValueError:
        return value


def p_values(table: Table, u: int) -> list[tuple[str, str]]:
    """The unit's p values in evaluate's table: (what it tests against, the p value as text)."""
    return [(key.removeprefix("p_").replace("_", " "), number_text(table[key][u], 3))
            for key in table if key.startswith("p_")]


def significance_title(inputs: ReportInputs, method: str, u: int) -> str:
    """The mark's tooltip: the answer evaluate scored, its held-out AUC and p values."""
    table = inputs.evaluation[method]
    verdict = "significant against every null network" if table["significant"][u] == "1" else "not significant"
    return (f"{verdict}; evaluate's answer {table['answer'][u] or 'none'}, held-out AUC "
            f"{number_text(table['auc'][u])}; p: " + ", ".join(f"{k} {v}" for k, v in p_values(table, u)))


def _cell(key: str, row: dict, inputs: ReportInputs | None = None) -> dict:
    value = row[key]
    if key.endswith("_significant") and inputs is not None:
        method = key.removesuffix("_significant")
        return {"value": value, "text": "\u2713" if value else "", "css": "mark", "href": None,
                "title": significance_title(inputs, method, row["unit"])}
    if key == "unit":
        return {"value": value, "text": value, "css": "num", "href": f"units/{value}.html"}
    if key == "classes":
        return {"value": value, "text": classes_text(value), "css": "", "href": None}
    if key == "detector":
        return {"value": value, "text": "yes" if value else "no", "css": "", "href": None}
    if key == "featurevis_activation":
        if value == "":
            return {"value": "", "text": "not selected", "css": "", "href": None}
        return {"value": value, "text": f"activation {value:.4g}", "css": "thumb", "href": f"units/{row['unit']}.html",
                "img": f"featurevis/{row['unit']}.png", "title": f"feature visualization: mean activation {value:.4g}"}
    if isinstance(value, float):
        return {"value": value, "text": f"{value:.4f}", "css": "num", "href": None}
    return {"value": value, "text": value, "css": "formula" if key == "formula" else
            ("num" if isinstance(value, int) else ""), "href": None}


def _index(inputs: ReportInputs, columns: list[dict], rows: list[dict], methods: list[dict]) -> str:
    view = [{"unit": row["unit"], "role": row.get("role", ""), "layer_role": row.get("layer_role_acc", ""),
             "concept": row.get("concept", ""),
             "formula": " ".join(formula_concepts(row.get("formula", ""))), "clip": row.get("clip", ""),
             "detector": int(bool(row.get("detector"))),
             "cells": [{"title": None, "img": None, **_cell(c["key"], row, inputs)} for c in columns]}
            for row in rows]
    fields = [(key, label) for key, label, present in (
        ("concept", "dissection", inputs.dissection), ("formula", "formula", inputs.formulas),
        ("clip", "CLIP-Dissect", inputs.clip)) if present]
    if len(fields) > 1:
        fields.append(("any", "any of these"))
    title = f"Units of {inputs.layer or 'an unknown layer'}: every method side by side"
    return render("index.html", root="", title=title, run=inputs.run, not_hashed=PARAMS_NOT_HASHED,
                  notes=inputs.notes, methods=methods, roles=CATEGORIES if inputs.roles else (),
                  layer_roles=_role_options(inputs.layer_roles["layer_role_acc"]) if inputs.layer_roles else (),
                  concept_fields=fields, has_detector=bool(inputs.dissection), columns=columns, rows=view,
                  scoreboard=_scoreboard(inputs.scoreboard))


def _role_options(roles: list[str]) -> tuple[str, ...]:
    """The layer-role filter's options: every ROF role, and NOT_COMPUTED where a unit has it."""
    return CATEGORIES + ((NOT_COMPUTED,) if NOT_COMPUTED in roles else ())


def _scoreboard(metrics: dict | None) -> dict | None:
    """evaluation.json's numbers per method and layer, as the index's scoreboard shows them (None:
    a number evaluate did not compute, such as causal agreement off the block feeding the final layer)."""
    if metrics is None:
        return None
    nulls = list(metrics.get("nulls", []))
    rows = []
    for method, layers in metrics["methods"].items():
        for layer, entry in layers.items():
            rows.append({"method": EVALUATED.get(method, (method,))[0], "layer": layer, "units": entry.get("units"),
                         "auc": entry.get("mean_heldout_auc"),
                         "null_auc": [entry.get("null_mean_auc", {}).get(k) for k in nulls],
                         "share": [entry.get("share_significant", {}).get(k) for k in nulls],
                         "every": entry.get("share_significant_every_null"),
                         "causal": entry.get("causal_agreement"), "class_answers": entry.get("class_answers")})
    return {"nulls": nulls, "fdr": metrics.get("fdr"), "rows": rows}


def _evaluation_table(inputs: ReportInputs, u: int) -> dict | None:
    """The unit's page: one row per method evaluate scored, its answer, scores, p values and (on
    the block feeding the final layer) what zeroing the unit does to the class its answer names."""
    if not inputs.evaluation:
        return None
    tables = inputs.evaluation.values()
    p_keys = list(dict.fromkeys(k for table in tables for k in table if k.startswith("p_")))
    causal = [k for k in CAUSAL_FIELDS if any(any(table.get(k, ())) for table in tables)]
    header = ["method", "answer", "fit score", "held-out score", "held-out AUC",
              *(f"p {k.removeprefix('p_').replace('_', ' ')}" for k in p_keys), "significant",
              *(CAUSAL_FIELDS[k] for k in causal)]
    rows = []
    for method, table in inputs.evaluation.items():
        rows.append([EVALUATED[method][0], table["answer"][u] or "none",
                     *(number_text(table[k][u]) for k in ("fit_score", "heldout_score", "auc")),
                     *(number_text(table[k][u], 3) if k in table else "" for k in p_keys),
                     "yes" if table["significant"][u] == "1" else "no",
                     *(number_text(table[k][u]) if k in table else "" for k in causal)])
    return {"header": header, "rows": rows}


def _strips(inputs: ReportInputs, u: int, size: int) -> tuple[bytes, bytes | None]:
    """The unit's top probe images with its mask in red, and with its formula's mask in blue."""
    d = inputs.dissection
    maps = d.tally["top_maps"][u][None]                                                  # 1 x k x h x w
    masks = unit_masks(maps, d.tally["thresholds"][u:u + 1], d.mask_size)[0].view(-1, d.mask_size, d.mask_size)
    images = [d.images[int(i)].permute(1, 2, 0).numpy() for i in d.tally["top_images"][u]]
    images = [image.squeeze(-1) if image.shape[-1] == 1 else image for image in images]
    strip = png_bytes(strip_image(images, masks.numpy(), size))
    if not (inputs.formula_masks and inputs.formulas["formula"][u]):
        return strip, None
    packed, formula_size = inputs.formula_masks
    formula_masks = unpack_masks(packed[u:u + 1], formula_size).view(-1, formula_size, formula_size).numpy()
    return strip, png_bytes(strip_image(images, formula_masks, size, colour=(40, 90, 230)))


def _featurevis_view(inputs: ReportInputs, u: int, size: int) -> dict | None:
    """The unit page's feature visualization: its image, or why there is none (None: the stage's
    output was left out, which the page's notes say)."""
    vis = inputs.featurevis
    if vis is None:
        return None
    if u not in vis.pngs:
        return {"image": None, "size": size,
                "text": f"not selected: featurevis.units visualized {vis.selection} (set it to all, or list this "
                        f"unit, and rerun `dvc repro featurevis`)"}
    text = f"an input optimised to maximise its mean activation (reaching {vis.activation[u]:.4g})"
    if vis.activation[u] <= 0:
        text = ("its activation stayed 0: the unit is silent on the starting image, so no gradient reached it "
                "through its ReLU (the image stays grey)")
    return {"image": f"../featurevis/{u}.png", "size": size, "text": text}


def _unit_page(inputs: ReportInputs, columns: list[dict], row: dict, methods: list[dict], curves: dict,
               strip: str | None, formula_strip: str | None, thumbnail: int = 112) -> str:
    u = row["unit"]
    # evaluate's columns have a table of their own below
    facts = [(c["label"], _cell(c["key"], row)["text"] or ("none" if c["key"] == "classes" else ""))
             for c in columns if c["key"] != "unit" and not is_evaluation_column(c["key"])]
    histogram, concepts = None, []
    if inputs.dissection:
        table, tally = inputs.dissection.table, inputs.dissection.tally
        histogram = histogram_chart(tally["histogram"][u].tolist(), float(tally["histogram_top"][u]),
                                    float(tally["thresholds"][u]))
        concepts = [(table[f"concept{s}"][u], float(table[f"iou{s}"][u])) for s in ("", "_2", "_3")]
    return render("unit.html", root="../", unit=u, layer=inputs.layer, notes=inputs.notes,
                  previous=u - 1 if u > 0 else None, next=u + 1 if u + 1 < inputs.n_units else None,
                  formula=row.get("formula") or None, facts=facts, methods=methods, strip=strip,
                  formula_strip=formula_strip, featurevis=_featurevis_view(inputs, u, thumbnail),
                  histogram_chart=histogram, concepts=concepts,
                  curve_charts=[mark(chart, row[f"rank_{s}"], u) for s, chart in curves.items()],
                  evaluation=_evaluation_table(inputs, u))


def is_evaluation_column(key: str) -> bool:
    return key == "invert" or key.endswith(("_significant", "_heldout_auc"))


def _method_page(inputs: ReportInputs, table: MethodTable) -> str:
    header = [name for name in table.table if name not in ("unit", "layer")]
    rows = [(u, [table.table[name][u] for name in header]) for u in range(inputs.n_units)]
    return render("method.html", root="../", label=METHOD_LABELS[table.key], layer=inputs.layer,
                  source=table.source, source_href=table.href, header=["unit", *header], rows=rows)


def run_report(inputs: ReportInputs, config: Any) -> ReportResult:
    """The site, the per-unit table and the metrics; `config`: the report section (thumbnail:
    pixels per probe image in the strips)."""
    columns, rows = _columns(inputs), _rows(inputs)
    methods = [{"key": t.key, "label": METHOD_LABELS[t.key]} for t in inputs.tables]
    files: dict[str, str | bytes] = {name: render(name) for name in STATIC_FILES}
    files["index.html"] = _index(inputs, columns, rows, methods)
    for table in inputs.tables:
        files[f"methods/{table.key}.html"] = _method_page(inputs, table)
    curves = {s: curve_chart(inputs.curves[s], s) for s in ("train", "test")} if inputs.curves else {}
    if inputs.featurevis:
        files.update({f"featurevis/{u}.png": data for u, data in inputs.featurevis.pngs.items()})
    for row in rows:
        u, strip, formula_strip = row["unit"], None, None
        if inputs.dissection:
            pixels, formula_pixels = _strips(inputs, u, config.thumbnail)
            strip, files[f"units/{u}.png"] = f"{u}.png", pixels
            if formula_pixels is not None:
                formula_strip, files[f"units/{u}_formula.png"] = f"{u}_formula.png", formula_pixels
        files[f"units/{u}.html"] = _unit_page(inputs, columns, row, methods, curves, strip, formula_strip,
                                              config.thumbnail)
    return ReportResult(inputs.layer, rows, _metrics(inputs, rows), list(inputs.notes), files)


def write_report(result: ReportResult, paths: dict[str, Path]) -> None:
    """The site (replaced whole: built in a temporary folder, then renamed), units.csv, report.json."""
    site = paths["site"]
    for stale in site.parent.glob(f".{site.name}.tmp-*"):     # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = site.with_name(f".{site.name}.tmp-{os.getpid()}")
    try:
        for name, content in result.files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        shutil.rmtree(site, ignore_errors=True)
        os.replace(tmp, site)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_csv(result.rows, paths["units_table"])
    write_json(result.metrics, paths["report_metrics"])
