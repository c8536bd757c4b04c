"""GLUE SST-2, word-level LSTM classifier (target >= 85.5% dev accuracy)."""

import ml_collections

from zoo.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config('glue/sst2')
  config.model = ml_collections.ConfigDict(dict(
      name='rnn_classifier', vocab_size=20000, embed_dim=256, hidden=256, num_layers=2, cell='lstm',
      bidirectional=False, pooling='last', dropout_rate=0.5, num_classes=2, implementation='auto'))
  # Two layers with adversarial training (Miyato et al. 2017): each step adds the loss at the embeddings pushed
  # by 0.25 (L2 norm per sentence) along the loss's gradient. 1-core trials of 3 epochs: seed 0 85.67%, seed 1
  # 86.12% (dev loss 0.374, 0.363). Against them, with seeds 0 and 1: one layer without it 84.75% and 84.40%
  # (loss 0.417); one layer with it 84.98% and 86.01% (seed 2: 84.63% against 83.83%); two layers without it
  # 85.09% and 83.49%. Epsilon on one layer: 0.1 84.63%, 0.2 84.52%, 0.35 84.86%; 0.5 and 1.5 stall at chance
  # (the push flips the small initial model); 4 epochs at 0.25 85.09%. An adversarial step costs two forward
  # and backward passes (one layer: 98 ms against 44 ms on 2 cores; PyTorch eager's same step, 91 ms).
  config.task = ml_collections.ConfigDict(dict(name='classification', input_key='tokens', adversarial_epsilon=0.25))
  # Evaluated with a moving average of the params: in 1-core trials of 3 epochs, 84.75% dev with a dev loss
  # of 0.417 and a dev accuracy rising at every evaluation, against 84.63% and 0.546. Over 3 epochs (3156
  # updates) the average's warm-up rate, not its 0.999 decay, sets its window (see optim.params_average).
  # 5 epochs peak at 85.44% (step 3500), then overfit: 84.40% at the end. AdamW's weight decay 0.1 instead of
  # 0.01 gave 85.09% at step 3000 (against 84.6%) but 84.63% at the end (loss 0.413), so it is not kept either.
  # Not kept (1-core trials, 3 epochs): without the average, attention pooling 82.68%, max pooling 83.14%,
  # word dropout 0.1 83.49%, warmup+cosine 83.83%; with learning rate 5e-4, 84.06%; with weight decay 0.1 and
  # one more change each: decay 0.3 83.94%, a vocabulary of 8000 words 83.37%, bidirectional 83.60%, hidden
  # 512 83.37%, dropout 0.6 84.29%, embeddings of 128 83.60%. Two layers: 85.09% with seed 0 but 83.49% with
  # seed 1, where this config gives 84.40%: seeds alone move the result by about a point.
  # Nor (session 11, 1-core, 3 epochs): GRU cells 83.83%; batches of 32 83.14%; learning rate 2e-3 83.37%; max
  # pooling 83.49%; label smoothing 0.1 84.17%; dropout 0.4 84.17%; embeddings of 300 84.29%; the Flax SST-2
  # example's optimizer (SGD, momentum 0.9, learning rate 0.1, L2 3e-6) for 10 epochs 83.49% (83.94% at best);
  # hidden 128 84.75% (seed 1: 84.29%), with two layers 84.63%. A longer averaging window (rate
  # (1+n)/(p+1+n), update k weighted ~k^(p-1); TF's is p=9): p=5 84.75% (loss 0.411), p=3 84.29% (0.406).
  # A learned end-of-sentence vector after the last word: 84.86% (seed 1: 84.52%). The embedding and LSTM
  # initialized from a word-level LM trained on SST-2's train text (634k tokens in windows of 60): after 3
  # epochs (train loss 6.1 nats/word) 84.98%, seed 1 84.06%; after 8 epochs (5.0) 83.83%, seed 1 83.03%.
  config.optimizer.update(dict(name='adamw', learning_rate=1e-3, weight_decay=1e-2, grad_clip_norm=1.0,
                               average_decay=0.999))
  config.num_epochs = 3
  config.eval_every = 500
  config.checkpoint.every = 500
  config.cpu_single_malloc_arena = True  # its step's buffers exceed 64 MiB (zoo.train.host_memory)
  return config
