"""Stage report: the unit explorer, a static site under artifacts/report/ that opens from the file
system: one row per unit of report.layer (ROF's units) with its ROF roles and ranks, its
dissection concept and IoU, the classes it is influential for, its compositional formula and its
CLIP-Dissect description, and a page per unit; and the same table as artifacts/units.csv.

Reads params `report`, artifacts/rof/{unit_roles.csv,curve_train.csv,curve_test.csv} (needed) and,
where present, artifacts/dissect/layers/<layer>.csv with artifacts/dissect/tallies.pt and
data/probe/probe.pt, artifacts/influence/units.csv, artifacts/compose/formulas.csv with
artifacts/compose/top_masks.pt (the formula's mask on the unit's top images, shown beside the
unit's own) and artifacts/clip_dissect/layers/<layer>.csv. A method's output that is missing, made from another
checkpoint or without report.layer is named on the index and its columns are left out. Writes
artifacts/report/, artifacts/units.csv and artifacts/metrics/report.json (per ROF role: detector
share, mean best IoU, share influential for some class, mean formula IoU; the rank correlation
of L1 rank and best IoU).
"""
import os
import shutil

from PIL import Image

from netunits.data.probe import load_probe, unpack_masks
from netunits.errors import PipelineError
from netunits.files import atomic_path, file_sha256, load_checked, read_csv, write_csv, write_json, write_text
from netunits.methods.dissection import unit_masks
from netunits.methods.rof import CATEGORIES
from netunits.report import index_page, strip_image, svg_curve, svg_histogram, unit_page
from netunits.models.checkpoint import load_checkpoint_file
from netunits.models.registry import get_architecture
from netunits.runtime import run_stage, stage_args, stage_config
from netunits.study import spearman


def dissection(run, layer, notes):
    """(table, tallies of the layer, probe) or None with a note."""
    try:
        table = read_csv(run / f"artifacts/dissect/layers/{layer}.csv", numeric=False)
        tallies = load_checked(run / "artifacts/dissect/tallies.pt", {"per_layer": lambda v: isinstance(v, dict)},
                               "dissection tallies")
        if tallies.get("checkpoint_sha256") != file_sha256(run / "artifacts/train/model.pt"):
            raise PipelineError("artifacts/dissect/tallies.pt: made from another checkpoint than "
                                "artifacts/train/model.pt")
        if layer not in tallies["per_layer"]:
            raise PipelineError(f"artifacts/dissect/tallies.pt: layer {layer} was not dissected")
        return table, tallies["per_layer"][layer], tallies["mask_size"], load_probe(run / "data/probe/probe.pt")
    except (PipelineError, FileNotFoundError) as exc:
        notes.append(f"network dissection left out: {exc}")
        return None


def influence(run, roles, notes):
    try:
        table = read_csv(run / "artifacts/influence/units.csv", numeric=False)
    except PipelineError as exc:
        notes.append(f"influential filters left out: {exc}")
        return None
    if table["category_acc"] != roles["category_acc"]:
        notes.append("influential filters left out: artifacts/influence/units.csv comes from another ROF run")
        return None
    return table[next(k for k in table if k.startswith("influential_for"))]


def layer_table(path, layer, n_units, what, notes):
    """The rows of `layer` in a per-unit table with a layer column (or one file per layer), in
    unit order, or None with a note."""
    try:
        table = read_csv(path, numeric=False)
    except PipelineError as exc:
        notes.append(f"{what} left out: {exc}")
        return None
    rows = [i for i, name in enumerate(table["layer"]) if name == layer]
    if [table["unit"][i] for i in rows] != [str(u) for u in range(n_units)]:
        notes.append(f"{what} left out: {path.name} has no row for each of the {n_units} units of {layer}")
        return None
    return {key: [values[i] for i in rows] for key, values in table.items()}


def formula_masks(run, layer, tally, notes):
    """Each formula's packed masks on the unit's top images (units x k x bytes) and their size, or
    None with a note: the compose stage's, when it used this checkpoint and these top images."""
    try:
        saved = load_checked(run / "artifacts/compose/top_masks.pt", {"per_layer": lambda v: isinstance(v, dict)},
                             "formula masks")
    except (PipelineError, FileNotFoundError) as exc:
        notes.append(f"formula masks left out: {exc}")
        return None
    entry = saved["per_layer"].get(layer)
    if saved.get("checkpoint_sha256") != file_sha256(run / "artifacts/train/model.pt") or entry is None or \
            not entry["top_images"].equal(tally["top_images"]):
        notes.append("formula masks left out: artifacts/compose/top_masks.pt is not of this checkpoint's "
                     f"{layer} and its top images")
        return None
    return entry["masks"], entry["size"]


def main(argv=None):
    args = stage_args(__doc__.splitlines()[0], argv)
    params = stage_config(args, "report").report
    run, size = args.run_dir, params.thumbnail
    # the block whose channels are ROF's units (the final layer reads their pooled values)
    layer = get_architecture(load_checkpoint_file(run / "artifacts/train/model.pt")["arch"]).last_block
    out, metrics_path = run / "artifacts/report", run / "artifacts/metrics/report.json"
    roles = read_csv(run / "artifacts/rof/unit_roles.csv", numeric=False)
    curves = {s: read_csv(run / f"artifacts/rof/curve_{s}.csv")["accuracy"] for s in ("train", "test")}
    notes = []
    dissected = dissection(run, layer, notes)
    classes = influence(run, roles, notes)
    n_units = len(roles["unit"])
    if dissected and len(dissected[0]["unit"]) != n_units:
        notes.append(f"network dissection left out: {layer} has {len(dissected[0]['unit'])} units, ROF {n_units}")
        dissected = None
    formulas = layer_table(run / "artifacts/compose/formulas.csv", layer, n_units, "compositional explanations",
                           notes)
    clip = layer_table(run / f"artifacts/clip_dissect/layers/{layer}.csv", layer, n_units, "CLIP-Dissect", notes)

    columns = [("unit", "unit", True), ("role", "role (accuracy)", False), ("role_loss", "role (loss)", False),
               ("rank_train", "L1 rank train", True), ("rank_test", "L1 rank test", True)]
    if dissected:
        columns += [("concept", "concept", False), ("iou", "IoU", True), ("detector", "detector", True)]
    if classes:
        columns += [("classes", "influential for", False)]
    if formulas:
        columns += [("formula", "formula", False), ("formula_iou", "formula IoU", True)]
    if clip:
        columns += [("clip", "CLIP-Dissect", False)]
    shown_formulas = formula_masks(run, layer, dissected[1], notes) if formulas and dissected else None
    rows = []
    for u in range(n_units):
        row = {"unit": u, "role": roles["category_acc"][u], "role_loss": roles["category_loss"][u],
               "rank_train": int(roles["rank_train"][u]), "rank_test": int(roles["rank_test"][u])}
        if dissected:
            table = dissected[0]
            row.update(concept=table["concept"][u], iou=float(table["iou"][u]), detector=int(table["detector"][u]))
        if classes:
            row["classes"] = classes[u].replace(";", " ")
        if formulas:
            row.update(formula=formulas["formula"][u], formula_iou=float(formulas["iou"][u]))
        if clip:
            row["clip"] = clip["description"][u]
        rows.append(row)

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "units").mkdir(parents=True)
    try:
        write_text(index_page(f"Units of {layer}: every method side by side", columns, rows, notes, CATEGORIES),
                   tmp / "index.html")
        for row in rows:
            u = row["unit"]
            facts = [(label, row[key]) for key, label, _ in columns if key != "unit"]
            strip, histogram, concepts = None, "<p class=note>no dissection</p>", []
            if dissected:
                table, tally, mask_size, probe = dissected
                maps = tally["top_maps"][u][None]                                     # 1 x k x h x w
                masks = unit_masks(maps, tally["thresholds"][u:u + 1], mask_size)[0].view(-1, mask_size, mask_size)
                images = [probe["images"][int(i)].permute(1, 2, 0).numpy().squeeze(-1)
                          if probe["images"].shape[1] == 1 else probe["images"][int(i)].permute(1, 2, 0).numpy()
                          for i in tally["top_images"][u]]
                strip = f"{u}.png"
                with atomic_path(tmp / "units" / strip) as path:
                    Image.fromarray(strip_image(images, masks.numpy(), size)).save(path, format="PNG")
                histogram = svg_histogram(tally["histogram"][u].tolist(), float(tally["histogram_top"][u]),
                                          float(tally["thresholds"][u]))
                concepts = [(table[f"concept{s}"][u], float(table[f"iou{s}"][u])) for s in ("", "_2", "_3")]
            formula_strip = None
            if shown_formulas and row.get("formula"):
                packed, formula_size = shown_formulas
                formula_strip = f"{u}_formula.png"
                with atomic_path(tmp / "units" / formula_strip) as path:
                    Image.fromarray(strip_image(images, unpack_masks(packed[u:u + 1], formula_size).view(
                        -1, formula_size, formula_size).numpy(), size, colour=(40, 90, 230))).save(path, format="PNG")
            curves_svg = svg_curve(curves["train"], row["rank_train"], label="train") + \
                svg_curve(curves["test"], row["rank_test"], label="test")
            write_text(unit_page(u, layer, facts, strip, histogram, curves_svg, concepts, formula_strip),
                       tmp / "units" / f"{u}.html")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {"layer": layer, "units": n_units, "left_out": notes, "by_role": {}}
    for role in CATEGORIES:
        members = [r for r in rows if r["role"] == role]
        entry = {"units": len(members)}
        if dissected and members:
            entry["detector_share"] = sum(r["detector"] for r in members) / len(members)
            entry["mean_best_iou"] = sum(r["iou"] for r in members) / len(members)
        if classes and members:
            entry["influential_share"] = sum(bool(r["classes"]) for r in members) / len(members)
        if formulas and members:
            entry["mean_formula_iou"] = sum(r["formula_iou"] for r in members) / len(members)
        summary["by_role"][role] = entry
    if dissected:
        summary["spearman_l1_rank_train_vs_iou"] = spearman([r["rank_train"] for r in rows], [r["iou"] for r in rows])
    write_csv(rows, run / "artifacts/units.csv")
    write_json(summary, metrics_path)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"report: {n_units} units, {total / 2**20:.1f} MiB in {out}; " + ("; ".join(notes)))


if __name__ == "__main__":
    run_stage(main)
