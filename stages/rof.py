"""ROF (Retrieval of Function) and the role taxonomy, as pure functions on tensors.

Notation: features F (n_samples x n_units, the pooled activations), labels y, the final layer
(W: n_classes x n_units, b: n_classes). An `order` is a permutation of the unit indices,
most important first. Retrieving the top n_units of `order` keeps those feature columns,
zeroes the rest, and applies W, b (bias kept, as in seed 000): n_units runs 0..n_units_total.
"""
from __future__ import annotations

import torch

CATEGORIES = ("both", "train_only", "test_only", "neither")
RANKINGS = ("l1", "random", "ascending")


# --------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------
def unit_l1_norms(features):
    """L1 norm of each unit's activations over the samples (float64)."""
    return features.to(torch.float64).abs().sum(dim=0)


def rank_units(scores, descending=True):
    """Unit indices sorted by score; ties keep ascending unit index (a stable sort)."""
    keys = -scores if descending else scores
    return torch.sort(keys, stable=True).indices


def unit_order(features, ranking, seed):
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
def _curve_stats(logits, labels):
    """Per retrieval step: (number correct, summed cross-entropy) over the samples.

    logits: n_samples x n_steps x n_classes. argmax takes the first maximum, like torch's.
    """
    correct = (logits.argmax(dim=2) == labels[:, None]).sum(dim=0)
    log_z = torch.logsumexp(logits, dim=2)
    target = logits.gather(2, labels[:, None, None].expand(-1, logits.shape[1], 1)).squeeze(2)
    return correct, (log_z - target).sum(dim=0)


def retrieval_curves(features, labels, weight, bias, order, chunk_elements=2**22, dtype=torch.float64):
    """Accuracy and mean cross-entropy for n_units = 0..n_units_total, in one vectorised pass.

    The logits after retrieving the first k ranked units are b + cumsum_k(F[:, order] * W[:, order]),
    so one cumulative sum over the ranked units gives every point of the curve. Samples are
    processed in chunks of about `chunk_elements` logits, which bounds memory.
    Returns (accuracy, loss), both float64 tensors of length n_units_total + 1.
    """
    n_samples, n_units = features.shape
    w_ranked = weight.to(dtype)[:, order].T              # n_units x n_classes
    b = bias.to(dtype)
    n_classes = w_ranked.shape[1]
    chunk = max(1, chunk_elements // ((n_units + 1) * n_classes))
    correct = torch.zeros(n_units + 1, dtype=torch.int64)
    loss_sum = torch.zeros(n_units + 1, dtype=torch.float64)
    for start in range(0, n_samples, chunk):
        f = features[start:start + chunk].to(dtype)[:, order]          # s x n_units
        logits = torch.empty((len(f), n_units + 1, n_classes), dtype=dtype)
        logits[:, 0] = b
        torch.cumsum(f[:, :, None] * w_ranked[None], dim=1, out=logits[:, 1:])
        logits[:, 1:] += b
        c, l = _curve_stats(logits, labels[start:start + chunk])
        correct += c
        loss_sum += l.to(torch.float64)
    return correct.to(torch.float64) / n_samples, loss_sum / n_samples


def retrieval_curves_loop(features, labels, weight, bias, order):
    """Reference implementation (seed 000's loop): one masked matrix product per n_units."""
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
def turning_point_exact(curve, maximise):
    """n_units at the first maximum (accuracy) or first minimum (loss) of the curve (seed 000)."""
    curve = torch.as_tensor(curve, dtype=torch.float64)
    target = curve.max() if maximise else curve.min()
    return int(torch.nonzero(curve == target)[0])


def turning_point_tolerance(curve, maximise, tolerance, relative):
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


def turning_points(accuracy, loss, acc_tolerance, loss_tolerance):
    """{'exact': {'acc': n0, 'loss': n0}, 'tolerance': {...}} for one ROF curve."""
    return {
        "exact": {"acc": turning_point_exact(accuracy, maximise=True),
                  "loss": turning_point_exact(loss, maximise=False)},
        "tolerance": {"acc": turning_point_tolerance(accuracy, True, acc_tolerance, relative=False),
                      "loss": turning_point_tolerance(loss, False, loss_tolerance, relative=True)},
    }


def is_degenerate(n0, n_units):
    """A highly active set that holds every unit or none separates nothing."""
    return n0 == 0 or n0 == n_units


# --------------------------------------------------------------------------------------------
# taxonomy
# --------------------------------------------------------------------------------------------
def highly_active(order, n0):
    """U0: the first n0 units of the retrieval order, as a bool mask over units."""
    mask = torch.zeros(len(order), dtype=torch.bool)
    mask[order[:n0]] = True
    return mask


def categorize(in_u0_train, in_u0_test):
    """Per unit: 'both' (in U0_train and U0_test), 'train_only', 'test_only' or 'neither'."""
    names = []
    for train, test in zip(in_u0_train.tolist(), in_u0_test.tolist()):
        names.append("both" if train and test else "train_only" if train else
                     "test_only" if test else "neither")
    return names


def category_counts(categories):
    """Counts and ratios (share of all units) of the four categories, in CATEGORIES order."""
    total = len(categories)
    counts = {name: sum(c == name for c in categories) for name in CATEGORIES}
    ratios = {f"{name}_ratio": counts[name] / total for name in CATEGORIES}
    return {**counts, **ratios}


def area_under_curve(accuracy):
    """Mean accuracy over n_units = 0..N: 1 means full accuracy from the first unit on."""
    return float(torch.as_tensor(accuracy, dtype=torch.float64).mean())
