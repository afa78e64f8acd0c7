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
def _count_correct(logits, top, target, labels):
    """Per retrieval step, how many samples' first maximal logit is their label (torch.argmax's rule).

    logits: steps x classes x samples. A sample is right when its label's logit is the maximum
    and no lower class ties it; exact ties are rare, so only tied positions pay for an argmax.
    """
    is_max = logits == top[:, None, :]
    n_max = is_max.view(torch.uint8).sum(dim=1, dtype=torch.uint8)  # at most n_classes; no int64 copy
    correct = ((target == top) & (n_max == 1)).sum(dim=1)
    step, sample = torch.nonzero((target == top) & (n_max > 1), as_tuple=True)
    if len(step):
        first = is_max[step, :, sample].view(torch.uint8).argmax(dim=1)
        correct.index_add_(0, step, (first == labels[sample]).to(correct.dtype))
    return correct


def retrieval_curves(features, labels, weight, bias, order, chunk_elements=2**20, dtype=torch.float32,
                     block=16):
    """Accuracy and mean cross-entropy for n_units = 0..n_units_total, in one vectorised pass.

    The logits after retrieving the first n ranked units are b + sum_{k<n} F[:, r_k] W[:, r_k]:
    a prefix sum over the ranked units, so one pass gives every point of the curve (the loop in
    retrieval_curves_loop does one masked matrix product per n instead). The prefix sum is
    blocked: within each block of `block` ranked units, one batched matrix product with a
    lower-triangular-masked copy of W gives the partial sums at every step; adding the running
    total of the earlier blocks completes them. That is several times faster on a CPU than an
    elementwise product followed by torch.cumsum.

    Logits are laid out steps x classes x samples, so the reductions over the classes run over
    contiguous rows of samples. Samples go in chunks of about `chunk_elements` logits
    (4 MiB in float32), which bounds memory whatever the number of samples.
    Returns (accuracy, loss), float64 tensors of length n_units_total + 1.
    """
    n_samples, n_units = features.shape
    n_classes = weight.shape[0]
    n_blocks = -(-n_units // block)
    padded = n_blocks * block  # zero units pad the last block; their steps are dropped below
    w_ranked = torch.zeros(padded, n_classes, dtype=dtype)
    w_ranked[:n_units] = weight.to(dtype)[:, order].T
    lower = torch.tril(torch.ones(block, block, dtype=dtype))            # [step n, unit k]: k <= n
    # masked[j, n * n_classes + c, k] = W[c, unit j * block + k] if k <= n else 0
    masked = (lower[None, :, None, :] * w_ranked.view(n_blocks, block, n_classes).permute(0, 2, 1)[:, None]) \
        .reshape(n_blocks, block * n_classes, block)
    b = bias.to(dtype)
    chunk = max(1, chunk_elements // ((padded + 1) * n_classes))
    correct = torch.zeros(n_units + 1, dtype=torch.int64)
    loss_sum = torch.zeros(n_units + 1, dtype=torch.float64)
    for start in range(0, n_samples, chunk):
        rows = features[start:start + chunk]
        ranked = torch.zeros(padded, len(rows), dtype=dtype)                 # gathered per chunk: memory
        ranked[:n_units] = rows[:, order].T                                  # stays bounded by the chunk
        f = ranked.view(n_blocks, block, -1)                                 # blocks x block x s
        y = labels[start:start + chunk]
        steps = torch.empty((padded + 1, n_classes, f.shape[2]), dtype=dtype)
        steps[0] = b[:, None]
        within = steps[1:].view(n_blocks, block * n_classes, -1)
        torch.bmm(masked, f, out=within)                                     # partial sums inside each block
        within = within.view(n_blocks, block, n_classes, -1)
        # each block's base: the bias plus the totals of all earlier blocks (one pass adds both)
        bases = torch.empty((n_blocks, n_classes, within.shape[3]), dtype=dtype)
        bases[0] = b[:, None]
        torch.cumsum(within[:-1, -1], dim=0, out=bases[1:])
        bases[1:] += b[:, None]
        within += bases[:, None]
        logits = steps[:n_units + 1]
        top = logits.amax(dim=1)
        target = logits.gather(1, y.view(1, 1, -1).expand(n_units + 1, 1, -1)).squeeze(1)
        correct += _count_correct(logits, top, target, y)
        log_z = logits.sub_(top[:, None, :]).exp_().sum(dim=1).log_().add_(top)
        loss_sum += (log_z - target).sum(dim=1, dtype=torch.float64)
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
