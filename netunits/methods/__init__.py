"""Analysis methods: pure functions on tensors, one module per method (compositional
explanations: formula.py, their grammar; formula_masks.py, their dense masks and scores;
bitmasks.py, bit-packed masks; compose_search.py, the beam search; the evaluation's stats.py,
causal.py and invert.py)."""
