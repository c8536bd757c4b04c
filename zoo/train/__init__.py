"""Training: state, optimizers, the step functions, the loop, run folders, Orbax checkpoints, metric writers."""
