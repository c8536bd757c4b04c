"""What compression costs or buys a trained run: test metrics after one-shot pruning or int8
quantization, and a small student trained with and without the run as its teacher."""

from __future__ import annotations

import contextlib
import pathlib

import jax
import ml_collections
import numpy as np

from zoo.compress import pruning, quantization
from zoo.errors import ConfigError
from zoo.train.checkpoint import load_state
from zoo.train.loop import evaluate_state, load_run, train_and_evaluate


def prune_and_evaluate(workdir: str, sparsities: list[float], scope: str,
                       raw_data_dir: str | None = None) -> list[dict]:
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


def _accuracy(model, variables, batches, mode: str | None, calibration=None) -> float:
  """Test accuracy of model.apply over (image, label, mask) batches, in a quantization mode or f32."""
  apply = lambda v, x: model.apply(v, x, train=False)
  context = quantization.quantized(mode, calibration) if mode else contextlib.nullcontext()
  with context as quantizer:
    logits_fn = jax.jit(apply)  # traced inside the block, so the Dense/Conv layers are replaced
    correct = count = 0.0
    for batch in batches:
      hits = np.asarray(logits_fn(variables, batch['image'])).argmax(-1) == batch['label']
      mask = batch.get('mask', np.ones(len(hits), np.float32))
      correct, count = correct + float((hits * mask).sum()), count + float(mask.sum())
  if quantizer is not None:
    quantization.check_supported(variables['params'], quantizer.quantized_paths)
  return correct / count


def quantize_and_evaluate(workdir: str, calibration_batches: int = 4, raw_data_dir: str | None = None) -> list[dict]:
  """Rows for f32, int8 with dynamic activation scales, and int8 with scales calibrated on train batches."""
  config, experiment, state = load_run(workdir, raw_data_dir=raw_data_dir)
  if experiment.task.input_key != 'image' or config.task.name != 'classification':
    raise ConfigError('Quantization is measured on image classifiers (test accuracy); '
                      f'{config.model.name!r} with task {config.task.name!r} is not one.')
  variables = {'params': state.params, **state.model_state}
  batches = list(experiment.pipeline.eval_batches(config.data.test_split, config.data.eval_batch_size))
  iterator = experiment.pipeline.train_iterator()
  with quantization.quantized('calibrate') as calibrator:
    for _ in range(calibration_batches):
      experiment.model.apply(variables, next(iterator)['image'], train=False)
  f32_bytes = sum(4 * leaf.size for leaf in jax.tree.leaves(state.params))
  int8_bytes = quantization.int8_weight_bytes(state.params)
  model = experiment.model
  return [
      {'model': config.model.name, 'weights': 'f32', 'activations': 'f32', 'bytes': f32_bytes,
       'test_accuracy': _accuracy(model, variables, batches, None)},
      {'model': config.model.name, 'weights': 'int8', 'activations': 'int8 dynamic', 'bytes': int8_bytes,
       'test_accuracy': _accuracy(model, variables, batches, 'int8')},
      {'model': config.model.name, 'weights': 'int8', 'activations': f'int8 static ({calibration_batches} batches)',
       'bytes': int8_bytes, 'test_accuracy': _accuracy(model, variables, batches, 'int8', calibrator.calibration)},
  ]


def quantization_markdown(rows: list[dict]) -> str:
  """The quantization rows as a markdown table."""
  lines = ['| model | weights | activations | size | test accuracy |', '|---|---|---|---|---|']
  lines += [f'| {r["model"]} | {r["weights"]} | {r["activations"]} | {r["bytes"]:,} B | '
            f'{100 * r["test_accuracy"]:.2f}% |' for r in rows]
  return '\n'.join(lines) + '\n'


def distill_and_compare(teacher_workdir: str, student: ml_collections.ConfigDict, out: pathlib.Path, *,
                        temperature: float = 4.0, alpha: float = 0.9, raw_data_dir: str | None = None) -> list[dict]:
  """Trains the `student` config twice with the same seed, on the labels alone and distilled from the
  teacher run, in out/student_alone and out/student_distilled (resumable); one row each."""
  rows = []
  for mode in ('alone', 'distilled'):
    config = student.copy_and_resolve_references()
    if mode == 'distilled':
      config.task = ml_collections.ConfigDict(dict(name='distillation', teacher_workdir=str(teacher_workdir),
                                                   temperature=temperature, alpha=alpha))
    result = train_and_evaluate(config, str(out / f'student_{mode}'), raw_data_dir=raw_data_dir)
    rows.append({'student': config.model.name, 'params': _param_count(out / f'student_{mode}'), 'training': mode,
                 'teacher': str(teacher_workdir) if mode == 'distilled' else None, 'steps': result['step'],
                 'test_accuracy': result['accuracy'], 'test_loss': result['loss']})
  return rows


def _param_count(workdir: pathlib.Path) -> int:
  return int(sum(leaf.size for leaf in jax.tree.leaves(load_state(workdir)['params'])))


def distillation_markdown(rows: list[dict]) -> str:
  """The distillation rows as a markdown table."""
  lines = ['| student | params | training | steps | test accuracy |', '|---|---|---|---|---|']
  training = lambda r: f'distilled from {r["teacher"]}' if r['teacher'] else 'labels only'
  lines += [f'| {r["student"]} | {r["params"]:,} | {training(r)} | {r["steps"]} | {100 * r["test_accuracy"]:.2f}% |'
            for r in rows]
  return '\n'.join(lines) + '\n'
