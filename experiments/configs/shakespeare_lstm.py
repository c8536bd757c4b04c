"""tiny_shakespeare, character LSTM (2x512) (target <= 1.50 nats/char on validation)."""

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
