"""Models: the registry of architectures (registry.py), how prepared images become a model's
input (inputs.py), checkpoint files (checkpoint.py), and the architectures built here
(resnet.py; the registry applies netunits.accel's CPU speed code to it).

This file imports nothing, so a stage that reads only checkpoints does not depend on the
architectures' code.
"""
