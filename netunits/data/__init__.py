"""Data sets: the registry (registry.py), their loaders (mnist.py), subset selection, resizing
and label noise (subsets.py), and the prepared format every later stage reads (prepared.py).

This file imports nothing, so a stage that reads only prepared subsets does not depend on
the loaders.
"""
