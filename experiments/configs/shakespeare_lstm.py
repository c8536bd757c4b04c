"""tiny_shakespeare, character LSTM language model (2 x 512), Adam, 10 epochs of 64 x 128 characters.

Expected: 1.474 nats/char on validation (target <= 1.50; 1.578 on test) in 12.4 min on 2 cores of an
AMD EPYC (2026-11-27, commit bd17c70). Model card: docs/models/rnn.md.

  python experiments/train.py --config=experiments/configs/shakespeare_lstm.py --workdir=runs/shakespeare_lstm
"""

import ml_collections

from zoo.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config('tiny_shakespeare')
  config.model = ml_collections.ConfigDict(dict(
      name='rnn_lm', vocab_size=128, embed_dim=64, hidden=512, num_layers=2, cell='lstm', dropout_rate=0.2,
      implementation='auto'))
  config.task = ml_collections.ConfigDict(dict(name='language_model'))
  config.optimizer.update(dict(name='adam', learning_rate=2e-3, schedule='warmup_cosine', warmup_steps=100,
                               grad_clip_norm=1.0))
  config.num_epochs = 10
  config.eval_every = 250
  config.checkpoint.every = 500
  config.checkpoint.best_metric = 'eval_loss'
  config.checkpoint.best_mode = 'min'
  config.cpu_single_malloc_arena = True  # its step's buffers exceed 64 MiB (zoo.train.host_memory)
  return config
