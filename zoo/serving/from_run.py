"""Serving artifacts from run folders: the latest checkpoint of a run, exported with its preprocessing."""

from __future__ import annotations

import pathlib

from zoo.serving import artifact
from zoo.train.loop import load_run


def export_run(workdir: pathlib.Path, out: pathlib.Path, raw_data_dir: str | None = None) -> pathlib.Path:
  """Writes the artifact of `workdir`'s latest checkpoint into `out`; returns `out`."""
  config, experiment, state = load_run(workdir, raw_data_dir=raw_data_dir)
  input_key = experiment.task.input_key
  example = experiment.pipeline.example_batch()[input_key]
  if input_key == 'tokens' and config.task.name == 'language_model':
    example = example[:, :-1]  # the LM reads tokens[:, :-1]
  variables = {'params': state.params, **state.model_state}
  model = experiment.model
  exported = artifact.export_inference(lambda x: model.apply(variables, x, train=False), example)
  metadata = {
      'task': config.task.name, 'model': config.model.name, 'input_key': input_key,
      'input_shape': [None, *example.shape[1:]], 'input_dtype': str(example.dtype),
      'image_scale': config.data.image_scale, 'trained_steps': int(state.step),
      'source_workdir': str(workdir.resolve()),
  }
  vocab = experiment.pipeline.vocab
  if vocab is not None:
    metadata.update(vocab=vocab.tokens, token_level=config.data.token_level)
  return artifact.save_artifact(out, exported, metadata)
