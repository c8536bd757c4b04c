"""The zoo's Transformer encoder at BERT-base size (12 layers, d_model 768, 12 heads, d_ff 3072; 108 M
params with a 30522-entry vocabulary) on GLUE SST-2, 128 tokens, batch 256, bf16 compute, layers scanned.

A sizing and sharding config (experiments/plan.py), not a recipe: trained from scratch on SST-2's 67k
phrases a model this size overfits at once (the small sst2_transformer config is the one that reaches
its target). BERT's own accuracy comes from pre-training, which zoo does not do. Optimizer as BERT's:
AdamW 1e-4, warmup 10%, weight decay 0.01, clipping at 1.
"""

import ml_collections

from zoo.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config('glue/sst2')
  config.data.batch_size = 256
  config.data.max_length = 128
  config.model = ml_collections.ConfigDict(dict(
      name='transformer', vocab_size=30522, max_len=128, d_model=768, num_heads=12, num_layers=12, d_ff=3072,
      dropout_rate=0.1, head='classify', pooling='cls', num_classes=2, attention='auto', scan_layers=True,
      remat='none'))
  config.task = ml_collections.ConfigDict(dict(name='classification', input_key='tokens'))
  config.optimizer.update(dict(name='adamw', learning_rate=1e-4, weight_decay=0.01, schedule='warmup_cosine',
                               warmup_steps=26, grad_clip_norm=1.0))
  config.compute_dtype = 'bfloat16'
  config.num_epochs = 1
  config.eval_every = 100
  config.checkpoint.every = 100
  return config
