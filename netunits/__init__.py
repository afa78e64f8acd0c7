"""netunits: unit-level analysis of trained CNNs, as a library the pipeline's stages call.

Modules, in the order their imports point (each imports only modules above it):

    errors       the one exception a user sees, as one line
    files        atomic writes, checked loading, CSV and JSON tables, file digests
    params       the params schema (one section per stage) and its validation
    runtime      running a stage, device, precision, threads, seeding, memory guards, progress
    data/        data-set registry (MNIST), subset selection, label noise, the prepared format
    models/      model registry (ResNet18 built here, torchvision architectures), checkpoints
    activations  forward hooks by module name: pooled features and spatial maps of any layer
    training     the training loop
    methods/     the analysis methods, pure functions on tensors (rof)
    study        statistics over many runs (correlations, summary tables)
    plots        the figures

This file imports nothing, so editing it reruns no stage.
"""
