"""netunits: unit-level analysis of trained CNNs, as a library the pipeline's stages call.

Modules, in the order their imports point (each imports only modules above it):

    errors              the one exception a user sees, as one line
    files               atomic writes, checked loading, CSV and JSON tables, file digests
    params              the params: one pydantic model per section, `compute` shared, loading a file
    runtime             a stage's command line, device, precision, threads, seeding, memory guards
    stage_table         every stage's params and files, each path written once (stage_paths)
    torchvision_compat  torchvision beside a CPU-only torch (the one shim)
    data/               data sets (registry, MNIST, CIFAR-10, safe unpickling), subsets and label
                        noise, the prepared format, probe sets (the format, Broden-format folders)
    concepts            concept masks of handwritten digits (scikit-image), for the MNIST probe
    accel/              CPU speed and memory code (small-map convolutions, the max-pool,
                        Adam stepped in the backward pass, heap trimming), applied in one place
    models/             architecture registry, ResNet18 built here, CIFAR ResNets, input
                        transform, checkpoints
    activations         forward hooks by module name: pooled features and spatial maps
    training            the training loop
    methods/            the analysis methods, pure functions on tensors: rof, influence,
                        dissection, compositional explanations (formula, formula_masks,
                        bitmasks, compose_search), clip_dissect, and for the evaluation stats
                        (rank AUC, Mann-Whitney, Benjamini-Hochberg, the split), causal
                        (ablation through the final layer) and invert
    study               statistics over many runs (correlations, summary tables)
    plots               the figures
    api/                one call per stage: load_<stage>_inputs, run_<stage>, write_<stage>
    dvc_files           the three dvc.yaml files written from the stage table

The package files (__init__.py) import no project module (netunits/api finds a stage's module
when its run_<stage> is asked for), so importing one module loads no other.
"""
