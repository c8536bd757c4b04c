"""Accuracy against sparsity for a trained run: one-shot magnitude pruning, then its test metrics."""

from __future__ import annotations

import jax

from zoo.compress import pruning
from zoo.train.loop import evaluate_state, load_run


def prune_and_evaluate(workdir: str, sparsities: list[float], scope: str, raw_data_dir: str | None = None) -> list[dict]:
  """One row per sparsity: test metrics, measured sparsity and nonzero kernel weights."""
  config, experiment, state = load_run(workdir, raw_data_dir=raw_data_dir)
  rows = []
  for sparsity in sparsities:
    params = pruning.apply_masks(state.params, pruning.magnitude_masks(state.params, sparsity, scope))
    params = jax.device_put(params, experiment.shardings.params)
    metrics = evaluate_state(config, experiment, state.replace(params=params), config.data.test_split)
    report = pruning.sparsity_report(jax.device_get(params))
    kernels = sum(leaf.size for leaf in jax.tree.leaves(params) if pruning.is_prunable(leaf))
    rows.append({'model': config.model.name, 'scope': scope, 'target_sparsity': sparsity,
                 'sparsity': report['all'], 'nonzero_kernel_weights': round(kernels * (1 - report['all'])),
                 'per_layer': {k: round(v, 4) for k, v in report.items() if k != 'all'},
                 **{f'test_{k}': v for k, v in metrics.items()}})
  return rows


def markdown(rows: list[dict]) -> str:
  """The rows as a markdown table (accuracy when the task has it, else loss)."""
  metric = 'test_accuracy' if 'test_accuracy' in rows[0] else 'test_loss'
  lines = [f'| model | scope | sparsity | nonzero kernel weights | {metric} |', '|---|---|---|---|---|']
  for row in rows:
    value = f'{100 * row[metric]:.2f}%' if metric == 'test_accuracy' else f'{row[metric]:.4f}'
    lines.append(f'| {row["model"]} | {row["scope"]} | {100 * row["sparsity"]:.1f}% | '
                 f'{row["nonzero_kernel_weights"]:,} | {value} |')
  return '\n'.join(lines) + '\n'
