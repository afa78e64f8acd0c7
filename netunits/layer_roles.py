"""layer_rof's roles of one layer's channels, as the tables that join them read them
(dissect_report's per-layer tables, the unit explorer): the roles from
<layer_rof_dir>/<layer>_roles.csv, or NOT_COMPUTED for every channel where layer_rof did not
compute that layer (written out, so that a missing role never reads as a value)."""
from __future__ import annotations

from pathlib import Path

from netunits.errors import PipelineError
from netunits.files import read_csv

NOT_COMPUTED = "not computed"
# the columns a joined table gains: the layer's own ROF role by accuracy and by loss
COLUMNS = {"layer_role_acc": "category_acc", "layer_role_loss": "category_loss"}


def read_layer_roles(folder: str | Path, layer: str, n_units: int) -> dict[str, list[str]] | None:
    """{"layer_role_acc": [...], "layer_role_loss": [...]} for the n_units channels of `layer`,
    or None where layer_rof wrote no table of it. A table whose rows are not the channels 0 ..
    n_units - 1 in order is a PipelineError naming the file and the stage to rerun."""
    path = Path(folder) / f"{layer}_roles.csv"
    if not path.exists():
        return None
    table = read_csv(path, numeric=False)
    if table.get("unit") != [str(u) for u in range(n_units)] or not set(COLUMNS.values()) <= set(table):
        raise PipelineError(f"{path}: not a role per channel for the {n_units} channels of {layer}; rerun "
                            f"`dvc repro layer_rof`")
    return {column: table[source] for column, source in COLUMNS.items()}


def roles_or_not_computed(roles: dict[str, list[str]] | None, n_units: int) -> dict[str, list[str]]:
    """The columns of read_layer_roles, NOT_COMPUTED in every row where it found no table."""
    return roles if roles is not None else {column: [NOT_COMPUTED] * n_units for column in COLUMNS}
