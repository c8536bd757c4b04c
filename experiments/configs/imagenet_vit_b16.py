"""ImageNet-1k, ViT-B/16: big_vision's plain-ViT recipe (Beyer et al. 2022, "Better plain ViT baselines")
at 90 epochs, with B/16 in place of S/16.

GAP head, fixed 2-D sinusoidal positions, zero-initialised head; batch 1024; Adam (b2 0.999) with
decoupled weight decay 1e-4 (big_vision's wd is multiplied by the schedule, not by the learning rate;
optax's adamw multiplies its weight_decay by the learning rate, hence 1e-4 / 1e-3 = 0.1 here); learning
rate 1e-3, 10k warmup steps, cosine decay; gradient clipping at norm 1; bf16 compute. big_vision adds
RandAugment(2, 10) and Mixup 0.2, which zoo's ImageNet pipeline does not have (it does Inception crops
and flips), so expect less than big_vision's figure; nobody has trained this config here.
"""

import ml_collections

from zoo.config import default_config

IMAGENET_TRAIN_IMAGES = 1_281_167


def get_config() -> ml_collections.ConfigDict:
  config = default_config('imagenet2012')
  config.data.name = 'imagenet2012'
  config.data.image_size = 224
  config.data.batch_size = 1024
  config.model = ml_collections.ConfigDict(dict(
      name='vit', num_classes=1000, patch_size=16, d_model=768, num_layers=12, num_heads=12, d_ff=3072,
      dropout_rate=0.0, pooling='gap', scan_layers=True, remat='none'))
  config.task = ml_collections.ConfigDict(dict(name='classification'))
  config.optimizer.update(dict(name='adamw', learning_rate=1e-3, b2=0.999, weight_decay=0.1,
                               schedule='warmup_cosine', warmup_steps=10_000, grad_clip_norm=1.0,
                               decay_mask='kernels'))
  config.compute_dtype = 'bfloat16'
  config.num_epochs = 90
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.data.batch_size
  config.eval_every = steps_per_epoch
  config.checkpoint.every = steps_per_epoch
  return config
