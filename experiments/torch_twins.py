"""Train steps of the PyTorch eager twins of zoo models, for side-by-side timing in benchmark.py.

The twins (zoo.pretrained.torch_twins) have the zoo model's layers and sizes
(read from config.model) and forward pass; here each gets the same loss and an
equivalent optimizer, and random inputs shaped like the zoo batch. Only the
speed of one full train step is compared, so the data's content does not
matter. PyTorch is optional (requirements-bench.txt).
"""

from __future__ import annotations

from typing import Callable

import ml_collections
import numpy as np

from zoo.pretrained import torch_twins


def _optimizer(torch, params, cfg: ml_collections.ConfigDict):
  """The torch.optim counterpart of zoo.train.optim.build's method (cfg: a complete optimizer section)."""
  name, lr = cfg.name, cfg.learning_rate
  if name in ('sgd', 'momentum', 'nesterov'):
    return torch.optim.SGD(params, lr, momentum=cfg.momentum if name != 'sgd' else 0.0,
                           nesterov=name == 'nesterov', weight_decay=cfg.weight_decay)
  if name == 'rmsprop':
    return torch.optim.RMSprop(params, lr, alpha=cfg.decay, eps=cfg.eps, momentum=cfg.momentum)
  adam = torch.optim.AdamW if cfg.weight_decay else torch.optim.Adam  # zoo's weight decay is decoupled
  return adam(params, lr, betas=(cfg.b1, cfg.b2), eps=cfg.eps, weight_decay=cfg.weight_decay)


def build_step(config: ml_collections.ConfigDict, batch: dict, seed: int) -> tuple[Callable[[], None], dict]:
  """A no-argument function doing one eager PyTorch train step of config's model on a batch shaped like `batch`.

  Returns (step, info) with torch's version and thread count. Raises
  NotImplementedError for models without a twin (the benchmark reports null).
  """
  torch = torch_twins.torch_module()
  torch.manual_seed(seed)
  cfg, name = config.model, config.model.name
  generator = np.random.default_rng(seed)
  if name in ('mlp', 'cnn', 'resnet', 'vae'):
    image = np.asarray(batch['image'], np.float32)
    x = torch.from_numpy(generator.random(image.shape, np.float32))
    model = torch_twins.build(cfg, image.shape[1:])
    if name in ('cnn', 'resnet'):
      x = x.permute(0, 3, 1, 2).contiguous()
    elif name == 'vae':
      x = torch.bernoulli(x.flatten(1))
  elif name in ('rnn_classifier', 'rnn_lm', 'transformer'):
    tokens = np.asarray(batch['tokens'])
    x = torch.from_numpy(np.where(tokens != 0, generator.integers(2, cfg.vocab_size, tokens.shape), 0)).long()
    model = torch_twins.build(cfg, tokens.shape[1:])
  else:
    raise NotImplementedError(f'no PyTorch twin for model {name!r}')
  language_model = name == 'rnn_lm' or cfg.get('head', 'classify') == 'lm'
  if language_model:  # zoo.tasks.LanguageModel: tokens i32[B, T+1], inputs [:, :-1], targets [:, 1:]
    x, labels = x[:, :-1].contiguous(), x[:, 1:].reshape(-1)
  else:
    labels = torch.from_numpy(generator.integers(0, cfg.get('num_classes', 2), x.shape[0])).long()
  optimizer = _optimizer(torch, model.parameters(), config.optimizer)
  clip = config.optimizer.get('grad_clip_norm', 0.0)
  average_decay = config.optimizer.get('average_decay', 0.0)
  weights = [p.detach() for p in model.parameters()]  # share storage: they follow the optimizer's in-place updates
  average = [w.clone() for w in weights] if average_decay else []
  model.train()

  epsilon = config.task.get('adversarial_epsilon', 0.0)
  consistency_weight = config.task.get('consistency_weight', 0.0)
  label_smoothing = config.task.get('label_smoothing', 0.0)

  def cross_entropy(logits, targets=labels):
    """Mean CE against the (smoothed) labels; a language model's logits [B, T, V] count every position."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, -2) if language_model else logits, targets,
                                             label_smoothing=label_smoothing)

  def consistency_loss():
    """R-Drop (zoo.tasks.classification): mean CE of two dropout passes in one + w * their symmetric KL."""
    logits = model(torch.cat([x, x]))
    first, second = logits.log_softmax(-1).chunk(2)
    kl = torch.nn.functional.kl_div
    symmetric = 0.5 * (kl(second, first, log_target=True, reduction='batchmean')
                       + kl(first, second, log_target=True, reduction='batchmean'))
    return cross_entropy(logits, torch.cat([labels, labels])) + consistency_weight * symmetric

  def loss_fn():
    if name == 'vae':
      logits, mean, logvar = model(x)
      reconstruction = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction='sum') / len(x)
      return reconstruction + 0.5 * (logvar.exp() + mean ** 2 - 1 - logvar).sum(-1).mean()
    return consistency_loss() if consistency_weight else cross_entropy(model(x))

  def adversarial_backward():
    """The gradients of CE(x) + CE(x + r) (zoo.tasks.classification): r from the clean pass's one backward."""
    embedded = model.embeddings(x)
    embedded.retain_grad()
    cross_entropy(model(x, embedded)).backward(retain_graph=True)
    direction = embedded.grad.flatten(1)
    direction = direction * (epsilon / (direction.norm(dim=1, keepdim=True) + 1e-12))
    perturbed = embedded + direction.view_as(embedded)
    cross_entropy(model(x, perturbed)).backward()

  def step():
    optimizer.zero_grad(set_to_none=True)
    if epsilon:
      adversarial_backward()
    else:
      loss_fn().backward()
    if clip:
      torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    if average:  # the params average of zoo.train.optim.params_average, at its long-run rate
      with torch.no_grad():
        torch._foreach_lerp_(average, weights, 1.0 - average_decay)  # pylint: disable=protected-access

  return step, {'torch_version': torch.__version__, 'torch_threads': torch.get_num_threads()}
