"""Models: the registry of architectures (registry.py), how prepared images become a model's
input (inputs.py), checkpoint files (checkpoint.py), and the architectures built here
(resnet.py, with gemm_conv.py's small-map convolutions).

This file imports nothing, so a stage that reads only checkpoints does not depend on the
architectures' code.
"""
