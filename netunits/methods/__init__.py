"""Analysis methods: pure functions on tensors, one module per method."""
