"""Model compression transforms: magnitude pruning (one-shot masks, and gradual pruning as an Optax
transform on Zhu & Gupta's cubic schedule) and int8 quantization (`zoo.compress.quantization`: per-channel
int8 weights, dynamic or calibrated int8 activations, fake quantization for QAT). Measuring what they cost
a trained run (accuracy against sparsity and size, and distillation) lives above, in
`zoo.train.compression` and `experiments/compress.py`; see docs/compression.md.
"""

from zoo.compress.pruning import apply_masks, gradual_pruning, magnitude_masks, polynomial_sparsity, sparsity_report

__all__ = ['apply_masks', 'gradual_pruning', 'magnitude_masks', 'polynomial_sparsity', 'sparsity_report']
