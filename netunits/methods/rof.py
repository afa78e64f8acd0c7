"""ROF (Retrieval of Function) and the role taxonomy, as pure functions on tensors.

Notation: features F (n_samples x n_units, the pooled activations), labels y, the final layer
(W: n_classes x n_units, b: n_classes). An `order` is a permutation of the unit indices,
most important first. Retrieving the top n_units of `order` keeps those feature columns,
zeroes the rest, and applies W, b (bias kept, as in the ROF notebook): n_units runs
0..n_units_total.

Reference: the ROF paper (see the README's citations) and its notebook, whose per-n loop is
retrieval_curves_loop below.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from netunits.errors import PipelineError

CATEGORIES = ("both", "train_only", "test_only", "neither")
RANKINGS = ("l1", "random", "ascending")


# --------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------
def unit_l1_norms(features: torch.Tensor) -> torch.Tensor:
    """L1 norm of each unit's activations over the samples (float64)."""
    return features.to(torch.float64).abs().sum(dim=0)


def rank_units(scores: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Unit indices sorted by score; ties keep ascending unit index (a stable sort)."""
    keys = -scores if descending else scores
    return torch.sort(keys, stable=True).indices


def unit_order(features: torch.Tensor, ranking: str, seed: int) -> torch.Tensor:
    """The retrieval order for a ranking: l1 (descending L1 norm), ascending, or random (seeded)."""
    if ranking == "l1":
        return rank_units(unit_l1_norms(features), descending=True)
    if ranking == "ascending":
        return rank_units(unit_l1_norms(features), descending=False)
    if ranking == "random":
        return torch.randperm(features.shape[1], generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"unknown ranking {ranking!r}; allowed: {', '.join(RANKINGS)}")


# --------------------------------------------------------------------------------------------
# retrieval curves
# --------------------------------------------------------------------------------------------
LOG2_E = math.log2(math.e)


def retrieval_curves(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     order: torch.Tensor, chunk_elements: int = 2**21,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean cross-entropy for n_units = 0..n_units_total, in one vectorised pass.

    The logits after retrieving the first n ranked units are b + sum_{k<n} F[:, r_k] W[:, r_k]:
    a prefix sum over the ranked units, so one torch.cumsum gives every point of the curve (the
    loop in retrieval_curves_loop does one masked matrix product per n instead).

    No MKL call on purpose: MKL's matrix products and its exp and log give bits that depend on
    the code path it picks at run time, so a rerun on the same machine could write other loss
    digits and DVC would see a changed output. Here every product is a single correctly rounded
    multiplication, torch's CPU cumsum runs sequentially (accumulating in float64), and the
    log-sum-exp uses torch's own exp2 and log1p kernels, so a rerun writes the same bits.

    Logits are laid out steps x classes x samples, so the reductions over the classes run over
    contiguous rows of samples. Samples go in chunks of about `chunk_elements` logits
    (8 MiB in float32) in one reused buffer, which bounds memory whatever the number of samples.
    The label's logit is kept apart, so the accuracy needs no pass over all logits beyond the
    maximum over classes that the log-sum-exp needs anyway.
    Returns (accuracy, loss), float64 tensors of length n_units_total + 1.
    """
    n_samples, n_units = features.shape
    n_classes = weight.shape[0]
    w_ranked = weight.to(dtype)[:, order].T.contiguous()                 # units x classes, ranked
    b = bias.to(dtype)
    chunk = max(1, chunk_elements // ((n_units + 1) * n_classes))
    # One buffer for every chunk: a fresh 8 MiB tensor per chunk costs its page faults each time.
    buffer = torch.empty((n_units + 1) * n_classes * min(chunk, n_samples), dtype=dtype)
    class_index = torch.arange(n_classes)
    correct = torch.zeros(n_units + 1, dtype=torch.int64)
    loss_sum = torch.zeros(n_units + 1, dtype=torch.float64)
    for start in range(0, n_samples, chunk):
        rows = features[start:start + chunk]
        y = labels[start:start + chunk]
        samples = torch.arange(len(rows))
        ranked = rows.T.to(dtype)[order]                # units x s, contiguous (a strided one makes mul 4x slower)
        logits = buffer[:(n_units + 1) * n_classes * len(rows)].view(n_units + 1, n_classes, len(rows))
        logits[0] = b[:, None]
        # The label's own logit is kept out of this tensor: -inf at step 0 stays -inf through
        # the prefix sums, so the maximum over classes is the best rival class, and the label's
        # logit comes from a prefix sum ten times smaller. Both prefix sums are torch.cumsum
        # (float64 accumulation, rounded per step), so equal logits compare equal.
        logits[0, y, samples] = -math.inf
        torch.mul(w_ranked[:, :, None], ranked[:, None, :], out=logits[1:])  # each unit's contribution
        logits.cumsum_(0)                                                    # step n: bias + first n units
        rival = logits.amax(dim=1)                                           # steps x s
        target = torch.empty(n_units + 1, len(rows), dtype=dtype)           # steps x s
        target[0] = b[y]
        torch.mul(w_ranked.index_select(1, y), ranked, out=target[1:])      # index_select: 2x faster than w[:, y]
        target.cumsum_(0)
        correct += (target > rival).sum(dim=1)
        # argmax takes the first maximum: a label tied with its best rival is right only if no
        # lower class ties it. Exact ties are rare, so only they are looked at class by class.
        step, sample = torch.nonzero(target == rival, as_tuple=True)
        if len(step):
            tied_lower = (logits[step, :, sample] == target[step, sample, None]) & (class_index < y[sample, None])
            correct.index_add_(0, step, (~tied_lower.any(dim=1)).to(correct.dtype))
        # log-sum-exp through exp2 and log1p: torch's exp and log call MKL's vector math library,
        # whose bits depend on the code path it picks, like BLAS (see above); exp2 and log1p are
        # torch's own kernels. The top class adds exp2(0) = 1, so sum_exp - 1 is exact.
        top = torch.maximum(target, rival)
        sum_exp = logits.sub_(top[:, None, :]).mul_(LOG2_E).exp2_().sum(dim=1)  # the label's -inf adds 0
        sum_exp += (target - top).mul_(LOG2_E).exp2_()
        loss_sum += (sum_exp.sub_(1).log1p_().add_(top) - target).sum(dim=1, dtype=torch.float64)
    return correct.to(torch.float64) / n_samples, loss_sum / n_samples


def retrieval_curves_loop(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                          order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation (the ROF notebook's loop): one masked matrix product per n_units."""
    n_samples, n_units = features.shape
    f = features.to(torch.float64)
    w, b = weight.to(torch.float64), bias.to(torch.float64)
    accuracy = torch.empty(n_units + 1, dtype=torch.float64)
    loss = torch.empty(n_units + 1, dtype=torch.float64)
    for n in range(n_units + 1):
        mask = torch.zeros(n_units, dtype=torch.float64)
        mask[order[:n]] = 1.0
        logits = (f * mask) @ w.T + b
        accuracy[n] = (logits.argmax(dim=1) == labels).double().mean()
        loss[n] = torch.nn.functional.cross_entropy(logits, labels)
    return accuracy, loss


# --------------------------------------------------------------------------------------------
# turning points
# --------------------------------------------------------------------------------------------
def turning_point_exact(curve: torch.Tensor, maximise: bool) -> int:
    """n_units at the first maximum (accuracy) or first minimum (loss) of the curve (the ROF notebook)."""
    curve = torch.as_tensor(curve, dtype=torch.float64)
    target = curve.max() if maximise else curve.min()
    return int(torch.nonzero(curve == target)[0])


def turning_point_tolerance(curve: torch.Tensor, maximise: bool, tolerance: float, relative: bool) -> int:
    """The smallest n_units whose value is within `tolerance` of the curve's best value.

    Accuracy uses an absolute tolerance (0.005 = half a percentage point); loss a relative one
    (loss <= min_loss * (1 + tolerance)), since the loss scale differs between train and test.
    tolerance 0 gives the exact turning point.
    """
    curve = torch.as_tensor(curve, dtype=torch.float64)
    if maximise:
        best = curve.max()
        bound = best * (1 - tolerance) if relative else best - tolerance
        ok = curve >= bound
    else:
        best = curve.min()
        bound = best * (1 + tolerance) if relative else best + tolerance
        ok = curve <= bound
    return int(torch.nonzero(ok)[0])


def turning_points(accuracy: torch.Tensor, loss: torch.Tensor, acc_tolerance: float,
                   loss_tolerance: float) -> dict[str, dict[str, int]]:
    """{'exact': {'acc': n0, 'loss': n0}, 'tolerance': {...}} for one ROF curve."""
    return {
        "exact": {"acc": turning_point_exact(accuracy, maximise=True),
                  "loss": turning_point_exact(loss, maximise=False)},
        "tolerance": {"acc": turning_point_tolerance(accuracy, True, acc_tolerance, relative=False),
                      "loss": turning_point_tolerance(loss, False, loss_tolerance, relative=True)},
    }


def is_degenerate(n0: int, n_units: int) -> bool:
    """A highly active set that holds every unit or none separates nothing."""
    return n0 == 0 or n0 == n_units


# --------------------------------------------------------------------------------------------
# taxonomy
# --------------------------------------------------------------------------------------------
def highly_active(order: torch.Tensor, n0: int) -> torch.Tensor:
    """U0: the first n0 units of the retrieval order, as a bool mask over units."""
    mask = torch.zeros(len(order), dtype=torch.bool)
    mask[order[:n0]] = True
    return mask


def categorize(in_u0_train: torch.Tensor, in_u0_test: torch.Tensor) -> list[str]:
    """Per unit: 'both' (in U0_train and U0_test), 'train_only', 'test_only' or 'neither'."""
    names = []
    for train, test in zip(in_u0_train.tolist(), in_u0_test.tolist()):
        names.append("both" if train and test else "train_only" if train else
                     "test_only" if test else "neither")
    return names


def category_counts(categories: Sequence[str]) -> dict[str, float]:
    """Counts and ratios (share of all units) of the four categories, in CATEGORIES order."""
    total = len(categories)
    counts = {name: sum(c == name for c in categories) for name in CATEGORIES}
    ratios = {f"{name}_ratio": counts[name] / total for name in CATEGORIES}
    return {**counts, **ratios}


def area_under_curve(accuracy: torch.Tensor | Sequence[float]) -> float:
    """Mean accuracy over n_units = 0..N: 1 means full accuracy from the first unit on."""
    return float(torch.as_tensor(accuracy, dtype=torch.float64).mean())


# --------------------------------------------------------------------------------------------
# the whole method on one model: every ranking's curves, the turning points and the roles
# --------------------------------------------------------------------------------------------
SUBSETS = ("train", "test")
DEFINITIONS = ("exact", "tolerance")
METRIC_NAMES = ("acc", "loss")


def sweep_subset(features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Every ranking's order and curves on one subset, checked against the model's own accuracy
    (`logits`: the model's output for these samples)."""
    model_accuracy = float((logits.argmax(1) == labels).double().mean())
    result = {}
    for ranking in RANKINGS:
        order = unit_order(features, ranking, seed)
        accuracy, loss = retrieval_curves(features, labels, weight, bias, order)
        if float(accuracy[-1]) != model_accuracy:
            raise PipelineError(f"ROF with all {len(order)} units gives accuracy {float(accuracy[-1]):.6f} but the "
                                f"model's own is {model_accuracy:.6f}; features and final layer disagree")
        result[ranking] = {"order": order, "accuracy": accuracy, "loss": loss}
    return result


def build_taxonomy(curves: Mapping[str, Mapping[str, Mapping[str, torch.Tensor]]], ranking: str, acc_tolerance: float,
                   loss_tolerance: float) -> tuple[dict, dict, dict, dict]:
    """Turning points per subset and the roles per definition and metric.

    curves: {subset: sweep_subset(...)} for "train" and "test". Returns (points, categories, u0,
    degenerate), the last three keyed by (definition, metric).
    """
    points = {name: turning_points(curves[name][ranking]["accuracy"], curves[name][ranking]["loss"],
                                   acc_tolerance, loss_tolerance) for name in SUBSETS}
    n_units = len(curves["train"][ranking]["order"])
    categories, u0 = {}, {}
    for definition in DEFINITIONS:
        for metric in METRIC_NAMES:
            masks = {name: highly_active(curves[name][ranking]["order"], points[name][definition][metric])
                     for name in SUBSETS}
            u0[(definition, metric)] = masks
            categories[(definition, metric)] = categorize(masks["train"], masks["test"])
    degenerate = {key: any(is_degenerate(points[name][key[0]][key[1]], n_units) for name in SUBSETS)
                  for key in categories}
    return points, categories, u0, degenerate
