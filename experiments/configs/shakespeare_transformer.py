"""tiny_shakespeare, causal character Transformer (4 x d192), AdamW, 10 epochs of 32 x 128 characters.

Expected: 1.496 nats/char on validation (target <= 1.50; 1.673 on test) in 10.9 min on 2 cores of an
AMD EPYC (2026-11-27, commit bd17c70). Model card: docs/models/transformer.md.

  python experiments/train.py --config=experiments/configs/shakespeare_transformer.py --workdir=runs/shakespeare_tf
"""

import ml_collections

from zoo.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config('tiny_shakespeare')
  config.model = ml_collections.ConfigDict(dict(
      name='transformer', vocab_size=128, max_len=129, d_model=192, num_heads=6, num_layers=4, d_ff=768,
      dropout_rate=0.0, causal=True, head='lm', attention='auto'))
  config.task = ml_collections.ConfigDict(dict(name='language_model'))
  config.optimizer.update(dict(name='adamw', learning_rate=2e-3, weight_decay=1e-2, schedule='warmup_cosine',
                               warmup_steps=200, grad_clip_norm=1.0))
  # Dropout 0: in 10 epochs this model is short of updates, not of data (docs/models/transformer.md).
  config.data.batch_size = 32  # twice the updates of batch 64 for the same compute
  config.num_epochs = 10
  config.eval_every = 250
  config.checkpoint.every = 500
  config.checkpoint.best_metric = 'eval_loss'
  config.checkpoint.best_mode = 'min'
  config.cpu_single_malloc_arena = True  # its step's buffers exceed 64 MiB (zoo.train.host_memory)
  return config
