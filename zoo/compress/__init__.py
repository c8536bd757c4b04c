"""Model compression: magnitude pruning (one-shot and gradual), measured by accuracy against sparsity."""

from zoo.compress.pruning import (apply_masks, gradual_pruning, magnitude_masks, polynomial_sparsity,
                                  sparsity_report)

__all__ = ['apply_masks', 'gradual_pruning', 'magnitude_masks', 'polynomial_sparsity', 'sparsity_report']
