"""GLUE SST-2, word-level LSTM classifier (target >= 85.5% dev accuracy)."""

import ml_collections

from zoo.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config('glue/sst2')
  config.model = ml_collections.ConfigDict(dict(
      name='rnn_classifier', vocab_size=20000, embed_dim=256, hidden=256, num_layers=1, cell='lstm',
      bidirectional=False, pooling='last', dropout_rate=0.5, num_classes=2, implementation='auto'))
  config.task = ml_collections.ConfigDict(dict(name='classification', input_key='tokens'))
  config.optimizer.update(dict(name='adamw', learning_rate=1e-3, weight_decay=1e-2, grad_clip_norm=1.0))
  config.num_epochs = 3
  config.eval_every = 500
  config.checkpoint.every = 500
  return config
