"""The run at a glance: the numbers a user reads first, from artifacts/metrics/*.json, as
artifacts/summary.md (`make summary`, or `python -m netunits.summary`).

`dvc metrics show` lists every key of every metrics file (hundreds of columns); this page keeps a
dozen: test accuracy, ROF's turning points and unit roles, detectors per layer, the compositional
formulas' IoU, CLIP-Dissect's unique descriptions, the influential filters' decomposed accuracy.
A missing or unreadable metrics file leaves its section saying so and which command makes it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from netunits.files import write_text

METRICS_DIR = Path("artifacts/metrics")
SUMMARY = Path("artifacts/summary.md")
# metrics file -> the DVC stage that writes it (dvc.yaml)
STAGES = {"train": "train_log", "rof": "rof_sweep", "dissect": "dissect_report", "compose": "compose",
          "clip_dissect": "clip_dissect", "influence": "influential_filters", "layer_rof": "layer_rof",
          "finetune": "finetune_decomposed", "evaluation": "evaluate", "compare": "compare_models",
          "report": "report"}
ROLES = ("both", "train_only", "test_only", "neither")


def _num(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(rows) -> list[str]:
    return ["| quantity | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]


def _train(m):
    return [("test accuracy (all units)", _num(m["baseline_accuracy"])),
            ("test loss", _num(m["baseline_loss"])),
            ("final training loss", _num(m["final_train_loss"]))]


def _roles(counts) -> str:
    text = " / ".join(str(counts[role]) for role in ROLES)
    return text + (" (degenerate: a U0 holds every unit or none)" if counts.get("degenerate") else "")


def _rof(m):
    rows = []
    for subset in ("train", "test"):
        s = m[subset]
        rows.append((f"n0 on {subset}: by accuracy exact / tolerance",
                     f"{s['n0_acc']} / {s['n0_acc_tol']} (accuracy with every unit {_num(s['full_accuracy'])})"))
        rows.append((f"n0 on {subset}: by loss exact / tolerance", f"{s['n0_loss']} / {s['n0_loss_tol']}"))
    for definition in ("exact", "tolerance"):
        for metric in ("acc", "loss"):
            rows.append((f"roles ({definition}, by {metric}): {' / '.join(ROLES)}",
                         _roles(m["taxonomy"][definition][metric])))
    return rows


def _dissect(m):
    layers = ", ".join(f"{name} {v['detectors']} of {v['units']}" for name, v in m["layers"].items())
    overall = m["overall"]
    return [(f"detectors per layer (best IoU at or above {m['iou_threshold']})", layers),
            ("unique concepts among detectors", str(overall["unique_concepts"])),
            ("mean best-concept IoU, all layers", _num(overall["mean_best_iou"]))]


def _compose(m):
    rows = []
    for name, v in m["layers"].items():
        lengths = sorted(v["formulas_by_length"], key=int)
        rows.append((f"{name}: mean formula IoU (best single concept's)",
                     f"{_num(v['mean_iou'])} ({_num(v['mean_single_iou'])})"))
        rows.append((f"{name}: unique formulas", f"{v['unique_formulas']} of {v['units']} units "
                                                 f"(lengths up to {lengths[-1]})"))
    return rows


def _clip_dissect(m):
    layers = ", ".join(f"{name} {v['unique_descriptions']} of {v['units']}" for name, v in m["layers"].items())
    overall = m["overall"]
    return [(f"unique descriptions per layer ({m['concepts']} concepts, {m['source']})", layers),
            ("agreement with network dissection (chance)",
             f"{_num(overall['agreement_with_dissection'], 3)} ({_num(overall['chance_agreement'], 3)})")]


def _influence(m):
    by_k = sorted(m["by_k"].items(), key=lambda kv: int(kv[0]))
    return [("accuracy with every unit", _num(m["accuracy_full"])),
            (f"decomposed accuracy, k = {' / '.join(k for k, _ in by_k)}",
             " / ".join(_num(v["accuracy_decomposed"], 3) for _, v in by_k)),
            (f"units in some class's set ({m['n_units']} units)", " / ".join(str(v["units_in_some_set"])
                                                                               for _, v in by_k))]


def _report(m):
    rows = [(f"{role} ({v['units']} unit{'' if v['units'] == 1 else 's'}): "
             "detector share / influential share / mean formula IoU",
             f"{_num(v['detector_share'], 3)} / {_num(v['influential_share'], 3)} / {_num(v['mean_formula_iou'])}")
            for role, v in m["by_role"].items()]
    rows.append(("Spearman: L1 rank on train vs best IoU", _num(m["spearman_l1_rank_train_vs_iou"], 3)))
    if m.get("left_out"):
        rows.append(("columns left out", ", ".join(map(str, m["left_out"]))))
    return rows


def _layer_rof(m):
    rows = []
    for name, v in m["layers"].items():
        rows.append((f"{name}: n0 by accuracy (tolerance) train / test, of {v['n_channels']} channels",
                     f"{v['train']['n0_acc_tol']} / {v['test']['n0_acc_tol']}"))
        rows.append((f"{name}: roles by accuracy {' / '.join(ROLES)}", _roles(v["roles"]["acc"])))
    return rows


def _finetune(m):
    epochs = f"{m['epochs']} epoch{'' if m['epochs'] == 1 else 's'}"
    return [(f"decomposed network (k = {m['k']}): test accuracy before / after {epochs}",
             f"{_num(m['accuracy_before'], 3)} / {_num(m['accuracy_after'], 3)} "
             f"(full network {_num(m['accuracy_full'], 3)})")]


def _evaluation(m):
    rows = []
    for method, layers in m["methods"].items():
        for layer, v in layers.items():
            shares = " / ".join(f"{_num(v['share_significant'].get(null), 3)}" for null in m["nulls"])
            text = f"{_num(v['mean_heldout_auc'], 3)} / {shares} / {_num(v.get('share_significant_every_null'), 3)}"
            if v.get("causal_agreement") is not None:
                text += f" (causal agreement {_num(v['causal_agreement'], 2)} of {v['class_answers']})"
            rows.append((f"{method} {layer}: mean held-out AUC / share significant against "
                         f"{' / '.join(m['nulls'])} / every null", text))
    planted = m.get("planted")
    if planted:
        rows.append((f"planted units on {planted['layer']} ({', '.join(planted['units'])}): recovered of expressible",
                     ", ".join(f"{method} {len(v['recovered'])} of {v['expressible']}"
                               for method, v in planted["methods"].items())))
        rows.append(("planted noise unit significant (held-out Mann-Whitney, BH)",
                     ", ".join(f"{method} {'yes' if any(v['noise_significant_mannwhitney']) else 'no'}"
                               for method, v in planted["methods"].items())))
    return rows


def _compare(m):
    rows = []
    for name, network in m["networks"].items():
        accuracy = network["test_accuracy"]
        rows.append((f"{name}: test accuracy; per layer significant answers (distinct concepts), answers beating "
                     f"the random network, detectors",
                     ("n/a" if accuracy is None else _num(accuracy, 3)) + "; " + ", ".join(
                         f"{layer} {v['significant']} ({v['significant_concepts']}), {v['beats_random']}, "
                         f"{v['detectors']}" for layer, v in network["layers"].items())))
    for layer, v in m["seeds"]["layers"].items():
        rows.append((f"{layer} over {len(m['seeds']['networks'])} seeds: answers beating the random network; "
                     f"concepts doing so in every seed", f"{' / '.join(map(str, v['beats_random']))}; "
                     f"{', '.join(v['stable_beats_random_concepts']) or 'none'}"))
    return rows


SECTIONS = (("train", "Training", _train),
            ("rof", "Retrieval of function (ROF)", _rof),
            ("dissect", "Network dissection", _dissect),
            ("compose", "Compositional explanations", _compose),
            ("clip_dissect", "CLIP-Dissect", _clip_dissect),
            ("influence", "Influential filters", _influence),
            ("layer_rof", "ROF at the blocks before the pooled layer", _layer_rof),
            ("finetune", "Fine-tuning the decomposed network", _finetune),
            ("evaluation", "Which answers can be trusted (held-out, against null networks)", _evaluation),
            ("compare", "Networks compared on the probe (seeds, label noise, random weights)", _compare),
            ("report", "Unit roles joined (the explorer's table)", _report))


def _section(metrics_dir: Path, name: str, rows_of) -> list[str]:
    path = metrics_dir / f"{name}.json"
    remedy = f"run `dvc repro {STAGES[name]}` to make it"
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        return [f"Missing: `{path}`; {remedy}."]
    except (OSError, json.JSONDecodeError) as exc:
        return [f"Unreadable: `{path}` ({exc}); {remedy}."]
    try:
        return _table(rows_of(metrics))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return [f"`{path}` lacks what this summary reads ({type(exc).__name__}: {exc}); {remedy}."]


def summary_markdown(metrics_dir: Path | str = METRICS_DIR) -> str:
    """The summary page's text from the metrics files in `metrics_dir`."""
    metrics_dir = Path(metrics_dir)
    lines = ["# Run summary", "",
             f"From `{metrics_dir}/*.json` by `python -m netunits.summary` (`make summary`). Every number: "
             f"`dvc metrics show --md {metrics_dir}/<name>.json`.", ""]
    for name, title, rows_of in SECTIONS:
        lines += [f"## {title} (`{name}.json`)", "", *_section(metrics_dir, name, rows_of), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def missing_files(metrics_dir: Path | str = METRICS_DIR) -> list[Path]:
    return [Path(metrics_dir) / f"{name}.json" for name, _, _ in SECTIONS
            if not (Path(metrics_dir) / f"{name}.json").is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics-dir", type=Path, default=METRICS_DIR, help=f"default: {METRICS_DIR}")
    parser.add_argument("--output", type=Path, default=SUMMARY, help=f"default: {SUMMARY}")
    args = parser.parse_args(argv)
    text = summary_markdown(args.metrics_dir)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text(text, args.output)
    print(text, end="")
    missing = missing_files(args.metrics_dir)
    note = f" ({len(missing)} metrics files missing: {', '.join(p.name for p in missing)})" if missing else ""
    print(f"wrote {args.output}{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
