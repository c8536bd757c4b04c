"""GLUE SST-2, Transformer encoder from scratch: directional heads, max pooling, R-Drop (target >= 82% dev)."""

import ml_collections

from zoo.config import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config('glue/sst2')
  config.model = ml_collections.ConfigDict(dict(
      name='transformer', vocab_size=20000, max_len=64, d_model=64, num_heads=4, num_layers=2, d_ff=256,
      dropout_rate=0.3, causal=False, directional=True, head='classify', pooling='max', num_classes=2,
      attention='auto'))
  config.task = ml_collections.ConfigDict(dict(name='classification', input_key='tokens', consistency_weight=3.0))
  config.optimizer.update(dict(name='adamw', learning_rate=1e-3, weight_decay=1e-2, schedule='warmup_cosine',
                               warmup_steps=300, grad_clip_norm=1.0))
  config.data.augment.word_dropout = 0.1
  # Directional heads (session 17; DiSAN's masks, Shen et al. 2018): in each block two heads attend to the
  # word and those before it, two to it and those after, which gives the encoder the order bias an LSTM has.
  # With R-Drop (task.consistency_weight 3: two dropout passes of the batch, 3 x the symmetric KL between
  # them added to the loss; Liang et al. 2021) for 4 epochs, 1-core trials over seeds 0-5: 82.45, 83.03,
  # 82.34, 81.42, 81.42, 82.34% (mean 82.17%, dev loss 0.40-0.41). Directional heads alone (3 epochs): 82.00,
  # 82.22, 81.31, 81.77, 81.42, 81.31% (mean 81.67%, loss 0.45-0.49); R-Drop alone (4 epochs, session 16):
  # mean 81.60%; neither (the session 15 config below): mean 81.37%. An R-Drop step costs ~2.2x a plain one.
  # Not kept (session 17, 1-core, seed 0 unless said): with directional heads, 8 heads 80.62%, d_model 128
  # 80.62%, 3 layers 81.88%, dropout 0.2 81.31%, mean pooling 80.85%, 4 epochs without R-Drop 81.54% (seed 1
  # 82.57%); without them, scalable softmax (logits x s log n, Nakanishi 2025) 80.62% (seed 1 81.08%), a
  # factorized 32-wide embedding 81.31% (80.28%), a width-3 convolution as the FFN's first layer 80.96%
  # (81.54%), causal attention with the last word's state as the pooling 80.73% (80.62%), and pairs of
  # same-label train phrases concatenated (half the batch; the dev sentences are longer) 82.22% (80.50%).
  # The trials below are of the earlier config: no directional heads, no R-Drop, 3 epochs.
  # Max over tokens, not the mean: 80.62% dev in 3 epochs (81.19% in a 1-core trial), against 80.39% for
  # mean pooling in 6 epochs; its lowest dev loss is 0.449, against 0.521.
  # d_model 64 (d_ff 256) instead of 128 (512): the model overfits SST-2 from step ~1500; in 1-core trials
  # 81.77% against 81.19%. Not kept (1-core, 3 epochs): label smoothing 0.1, 81.42% at d_model 128 and
  # 80.50% at 64; 4 epochs at 64 with smoothing, 80.96%. Nor (session 9, 1-core, 3 epochs): attention pooling
  # 80.50%; the params average (optimizer.average_decay=0.999) 81.65%; d_model 128 with it, 80.39% at step 2500.
  # Nor (session 10, 1-core, 3 epochs): weight decay 0.1 81.42%; a vocabulary of 8000 words 81.08%; dropout
  # 0.4 80.73%; 2 heads 80.28%; learning rate 5e-4 80.62%; 1 layer 80.73%; 3 layers 81.31%; word dropout 0.2
  # 80.85%; d_ff 128 80.28%; 2 epochs 80.62%. This config with seed 1: 81.77%.
  # Nor (session 11, 1-core, 3 epochs): batches of 32 82.22% but 80.62% with seed 1; no word dropout 81.995%
  # (715 of 872) but 80.73% with seed 1; dropout 0.2 80.28%; learning rate 2e-3 79.59%; 8 heads 81.31%.
  # Nor (session 12, 1-core, 3 epochs): adversarial training (task.adversarial_epsilon, as in sst2_lstm) with
  # epsilon 1.0, 81.08% (at chance until step ~1000, 82.22% at step 2500); 0.5, 81.42% (82.11% at 2500); 0.25,
  # 80.28% and with seed 1 80.96%.
  # Nor (session 13, 1-core): epsilon 1.0 for 4 epochs, 81.995% (715 of 872, dev loss 0.401) and with seed 1
  # 81.42%; the same with the params average (0.999), 81.995% (loss 0.401) and with seed 1 81.42%; 5 epochs
  # with the average, 81.54%; epsilon 0.5 for 4 epochs, 80.73%; epsilon 0.5 at d_model 128, 81.08%.
  # Nor (session 14, 1-core, 3 epochs): an auxiliary masked-word loss in the same pass (15% of the words,
  # up to 8 per sentence, become <unk> and are predicted through the tied embedding; a prototype, not kept),
  # weight 1.0 80.16% (without word dropout 80.62%), 0.3 78.67%, 0.1 78.78%; the masked-word loss stays near
  # 6.6 nats, so the small model learns little from it, and the masking slows the classifier's start.
  # Nor (session 15, 1-core, 3 epochs; prototypes, not kept): a sliding attention window (keys within w
  # positions), w 2 80.85%, w 4 81.88% (seed 1 81.65%), w 8 82.11% (seeds 1 and 2: 81.31%, 81.19%); the dev
  # loss falls to 0.43-0.45 but the accuracy stays. Distillation (task 'distillation') from the sst2_lstm run
  # (85.67%, its params average): T 4, alpha 0.9 80.50%; T 2, alpha 0.5 80.96%. The teacher fits the train
  # set, so its soft targets carry little beyond the labels. Mixup of the embedded sentences and their labels
  # (pairs within a batch, one Beta(a, a) weight per batch; a prototype): a 1.0 81.65%, a 0.4 81.42%, a 1.0
  # for 5 epochs 82.11% (seeds 1 and 2: 80.73%, 80.05%), a 1.0 at d_model 128 80.73%; the dev loss falls to
  # 0.40-0.41, the accuracy does not rise.
  # That config over seeds 0-5 (seed 0 was the results row; 2-5 1-core runs): 81.65, 81.77, 80.28, 82.22,
  # 81.65, 80.62%; mean 81.37%, standard deviation 0.75 points. Single-seed differences below ~1.5 points
  # between variants are within that spread. Token embeddings 4x the positions' size (init std 0.5, not
  # d_model^-0.5): 78.67% (seed 2: 80.16%).
  # Session 16 (1-core; prototypes, not kept but R-Drop, now in the config): R-Drop (Liang et al. 2021: the
  # batch twice with its own dropout masks, the mean CE + w x the symmetric KL between the predictions): w 1
  # 81.54%; w 3 over seeds 0-3 82.22, 81.65, 81.65, 81.65%; w 3 for 4 epochs over seeds 0-5 82.34, 82.34,
  # 81.88, 81.54, 80.16, 81.31%
  # (mean 81.60%, at 2.2x the step's cost); w 6 80.62% (seed 1); w 1 at d_model 128 81.31%. Its dev loss falls
  # to 0.40-0.43. SAM (rho 0.05) 80.05%. Train-time position offsets (0-32, one per sentence; SST-2's train
  # phrases have a median of 7 words, its dev sentences 19): seeds 0-3 82.68, 81.08, 79.93, 81.31%; with R-Drop
  # (w 3, 4 epochs) 81.65% for seeds 0 and 1. The loss weighted by sentence length^p: p 0.5 79.93%, p 1
  # 80.85%. 'cls' pooling 79.82%; mean and max pooling concatenated 80.39%; 4 layers 80.16%; d_model 96
  # (d_ff 384) 81.08%; a T5-style relative position bias in the attention logits (32 buckets, per layer and
  # head) 81.65% (seed 1: 80.96%). By length, that config's results row got 87.5% of the dev sentences
  # of up to 10 words right and 71.4% of those over 30 (the sst2_lstm row: 90.8% and 81.0%).
  config.num_epochs = 4
  config.eval_every = 500
  config.checkpoint.every = 500
  config.cpu_single_malloc_arena = True  # its step's buffers exceed 64 MiB (zoo.train.host_memory)
  return config
