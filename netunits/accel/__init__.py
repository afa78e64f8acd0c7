"""Speed and memory code for the CPU, kept apart from the models and the training loop. None of
it changes a bit of any output (tests/test_accel.py, tests/test_gemm_conv.py).

    gemm_conv       convolutions on small maps as one matrix product under CPU bf16 autocast
    maxpool         a max-pool that keeps only its indices for the backward pass
    optimizer       Adam stepped per parameter from the backward pass, gradients freed at once
    memory          the C heap's free pages handed back between a stage's phases (malloc_trim)
    model_hooks     where a model gets it: `apply(model)`, called by the registry's build_model
    training_hooks  where training gets it: `TrainingHooks`, used by netunits.training
"""
