"""ImageNet-style input pipeline throughput: zoo's grain pipeline against torchvision's DataLoader.

  python experiments/pipeline_benchmark.py --images=2000 --workers=1,2 --rounds=2 --out=benchmarks/pipeline_cpu.jsonl

Needs `pip install -r requirements-bench.txt` (torch, torchvision, scikit-image). Makes `--images` JPEGs from the
real photographs scikit-image ships (random crops, resized so the mean size is near ImageNet's ~400 x 350,
quality 75-95), writes them as the official archives (a train tar of per-class tars), prepares them with zoo's
imagenet2012 builder and times, per worker count, in alternating order:

  zoo            build_pipeline(imagenet2012 preset): grain workers read array_record, decode (simplejpeg),
                 random-resized crop (scale 0.08-1, ratio 3/4-4/3) + flip to 224 px, float32 [0, 1]; DCT
                 downscaling while decoding where a crop is twice the output or more (jpeg_draft)
  zoo_no_draft   the same without DCT downscaling: pixel for pixel the operations torchvision does
  torchvision    DataLoader over ImageFolder (the same JPEGs as files): PIL open + convert('RGB'),
                 RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor (float32 [0, 1])

Each timing starts after the first batch (worker start-up excluded) and covers `--images` images. It records
wall-clock images/s and images per CPU-second of the loader's processes (this one and its workers, from
/proc): on a machine shared with other jobs the wall clock measures the scheduler's share, while CPU time
measures the work one core does per image. Prints one JSON object per timing, a CPU profile of the steps
of one train example, and a summary per loader and worker count (medians over rounds) with the cores that
feed one H100 training ResNet-50 at `--accelerator_images_per_s` (3000 images/s in bf16) =
3000 / images per CPU-second.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import sys
import tarfile
import tempfile
import time
import types

import numpy as np
import PIL
import PIL.Image
from absl import app, flags, logging

from zoo import benchmarking
from zoo.config import default_config
from zoo.data import build_pipeline, prepare
from zoo.data.imagenet import validation_labels

_IMAGES = flags.DEFINE_integer('images', 2000, 'JPEGs in the corpus; each timing reads this many.')
_WORKERS = flags.DEFINE_list('workers', ['1', '2'], 'Worker process counts to time.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Rounds of (every loader x every worker count), alternating.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Images per batch.')
_SIZE = flags.DEFINE_integer('image_size', 224, 'Output height and width.')
_LOADERS = flags.DEFINE_list('loaders', ['zoo', 'zoo_no_draft', 'torchvision'], 'What to time.')
_TARGET = flags.DEFINE_float('accelerator_images_per_s', 3000.0, 'Images/s one accelerator consumes.')
_OUT = flags.DEFINE_string('out', None, 'Append the JSON lines to this file too.')
_SEED = flags.DEFINE_integer('seed', 0, 'Corpus and shuffle seed.')

# scikit-image's bundled photographs (no download needed); the grey ones become RGB like ImageNet's few.
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'rocket',
          'camera', 'coins', 'moon', 'grass', 'gravel', 'brick')
NUM_CLASSES = 10


def _photos() -> list[PIL.Image.Image]:
  import skimage.data
  images = [PIL.Image.fromarray(getattr(skimage.data, name)()).convert('RGB') for name in PHOTOS]
  left, right, _ = skimage.data.stereo_motorcycle()
  return images + [PIL.Image.fromarray(left).convert('RGB'), PIL.Image.fromarray(right).convert('RGB')]


def make_corpus(count: int, rng: np.random.Generator) -> list[bytes]:
  """`count` JPEGs: a random crop (40-100% of each side) of a photo, resized to ~N(400, 60) x ratio, q 75-95."""
  photos, out = _photos(), []
  for _ in range(count):
    photo = photos[rng.integers(len(photos))]
    w, h = photo.size
    cw, ch = (int(v * rng.uniform(0.4, 1.0)) for v in (w, h))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    width = int(np.clip(rng.normal(400, 60), 200, 640))
    height = int(np.clip(width * rng.uniform(0.7, 1.05), 150, 640))
    image = photo.resize((width, height), PIL.Image.BICUBIC, box=(left, top, left + cw, top + ch))
    buffer = io.BytesIO()
    image.save(buffer, format='JPEG', quality=int(rng.integers(75, 96)))
    out.append(buffer.getvalue())
  return out


def _tar(files: dict[str, bytes]) -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w') as archive:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


def write_corpus(jpegs: list[bytes], root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """The official archives in root/raw/imagenet2012/ and the same files as an ImageFolder in root/folder/."""
  classes = sorted(set(validation_labels()))[:NUM_CLASSES]
  per_class: dict[str, dict[str, bytes]] = {c: {} for c in classes}
  folder = root / 'folder'
  for index, data in enumerate(jpegs):
    synset = classes[index % NUM_CLASSES]
    name = f'{synset}_{index}.JPEG'
    per_class[synset][name] = data
    (folder / synset).mkdir(parents=True, exist_ok=True)
    (folder / synset / name).write_bytes(data)
  raw = root / 'raw' / 'imagenet2012'
  raw.mkdir(parents=True)
  (raw / 'ILSVRC2012_img_train.tar').write_bytes(_tar({f'{c}.tar': _tar(files) for c, files in per_class.items()}))
  (raw / 'ILSVRC2012_img_val.tar').write_bytes(_tar({'ILSVRC2012_val_00000001.JPEG': jpegs[0]}))
  return root / 'raw', folder


def cpu_seconds() -> float:
  """CPU seconds (user + system) used so far by this process and every live process it started (Linux /proc)."""
  tick = os.sysconf('SC_CLK_TCK')
  parents, times = {}, {}
  for stat in pathlib.Path('/proc').glob('[0-9]*/stat'):
    try:
      fields = stat.read_text().rsplit(')', 1)[1].split()
    except OSError:  # the process ended meanwhile
      continue
    pid = int(stat.parent.name)
    parents[pid], times[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
  family, frontier = {os.getpid()}, [os.getpid()]
  while frontier:
    children = [pid for pid, parent in parents.items() if parent in frontier and pid not in family]
    family.update(children)
    frontier = children
  return sum(times.get(pid, 0.0) for pid in family)


class Timer:
  """Wall and CPU seconds (this process and its workers) of the images counted between start() and stop()."""

  def start(self):
    self.wall, self.cpu, self.images = time.perf_counter(), cpu_seconds(), 0

  def stop(self) -> dict[str, float]:
    wall, cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu
    return {'images_per_s': self.images / wall, 'images_per_cpu_s': self.images / cpu, 'wall_s': wall, 'cpu_s': cpu}


def time_zoo(tfds_dir: str, workers: int, draft: bool, count: int) -> dict[str, float]:
  """Throughput of zoo's train iterator (imagenet2012 preset), after its first batch."""
  config = default_config('imagenet2012').data
  config.update(dict(tfds_dir=tfds_dir, batch_size=_BATCH.value, image_size=_SIZE.value, num_workers=workers,
                     jpeg_draft=draft))
  iterator = build_pipeline(config, seed=_SEED.value).train_iterator()
  try:
    batch = next(iterator)
    assert batch['image'].shape == (_BATCH.value, _SIZE.value, _SIZE.value, 3), batch['image'].shape
    timer = Timer()
    timer.start()
    while timer.images < count:
      timer.images += len(next(iterator)['image'])
    return timer.stop()
  finally:
    if workers:
      iterator.close()


def _import_torchvision():
  """torchvision; where its compiled ops cannot load (PyPI's wheel is the CUDA build, torch here the CPU one),
  without their fake-tensor registrations: datasets and PIL transforms are pure Python and do not use them."""
  try:
    import torchvision
  except RuntimeError as error:
    if 'torchvision::' not in str(error):
      raise
    for name in [m for m in sys.modules if m.startswith('torchvision')]:
      del sys.modules[name]
    sys.modules['torchvision._meta_registrations'] = types.ModuleType('torchvision._meta_registrations')
    import torchvision
  return torchvision


def time_torchvision(folder: pathlib.Path, workers: int, count: int) -> dict[str, float]:
  """Throughput of DataLoader(ImageFolder) with RandomResizedCrop + flip + ToTensor, after its first batch."""
  import torch
  torchvision = _import_torchvision()
  from torchvision import transforms
  torch.manual_seed(_SEED.value)
  transform = transforms.Compose([transforms.RandomResizedCrop(_SIZE.value), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor()])
  dataset = torchvision.datasets.ImageFolder(str(folder), transform=transform)
  sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10 * (count + 2 * _BATCH.value))
  loader = torch.utils.data.DataLoader(dataset, batch_size=_BATCH.value, sampler=sampler, num_workers=workers,
                                       drop_last=True)
  iterator = iter(loader)
  images, _ = next(iterator)
  assert tuple(images.shape) == (_BATCH.value, 3, _SIZE.value, _SIZE.value), images.shape
  timer = Timer()
  timer.start()
  while timer.images < count:
    timer.images += len(next(iterator)[0])
  result = timer.stop()
  del iterator
  return result


def profile_stages(jpegs: list[bytes], rng: np.random.Generator) -> dict[str, float]:
  """CPU milliseconds per image of each step of a train example, in this process (no workers)."""
  from zoo.data import image_ops
  size = _SIZE.value
  opened = [PIL.Image.open(io.BytesIO(data)) for data in jpegs]
  boxes = [image_ops.random_resized_crop_box(*image.size, rng) for image in opened]

  def per_image(fn, items):
    started = time.process_time()
    outputs = [fn(item) for item in items]
    return (time.process_time() - started) / len(items) * 1e3, outputs

  ms = {}
  ms['decode_pil (not used)'], _ = per_image(lambda d: PIL.Image.open(io.BytesIO(d)).convert('RGB'), jpegs)
  ms['decode_simplejpeg'], decoded = per_image(lambda d: image_ops.decode_rgb(d)[0], jpegs)
  box = lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3])
  ms['crop_resize_bilinear'], resized = per_image(
      lambda ib: ib[0].resize((size, size), PIL.Image.BILINEAR, box=box(ib[1])), list(zip(decoded, boxes)))
  ms['crop_resize_nearest (not used)'], _ = per_image(
      lambda ib: ib[0].resize((size, size), PIL.Image.NEAREST, box=box(ib[1])), list(zip(decoded, boxes)))
  ms['flip_to_array'], arrays = per_image(lambda i: np.asarray(i.transpose(PIL.Image.FLIP_LEFT_RIGHT)), resized)
  ms['to_float32'], _ = per_image(lambda a: a.astype(np.float32) / np.float32(255), arrays)
  for draft in (False, True):
    ms[f'decode_train_draft_{draft}'], _ = per_image(
        lambda d: image_ops.decode_train(d, size, rng, draft=draft), jpegs)
    ms[f'decode_eval_draft_{draft}'], _ = per_image(lambda d: image_ops.decode_eval(d, size, draft=draft), jpegs)
  shrinkable = sum(min(b[2], b[3]) >= 2 * size for b in boxes)
  return {'ms_per_image': ms, 'train_crops_draft_can_shrink': shrinkable / len(boxes)}


def _environment() -> dict:
  import grain
  import torch
  torchvision = _import_torchvision()
  return {**benchmarking.provenance(),
          'versions': {'pillow': PIL.__version__, 'grain': grain.__version__, 'torch': torch.__version__,
                       'torchvision': torchvision.__version__, 'numpy': np.__version__}}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  environment = _environment()
  records = []

  def emit(record):
    record = environment | record
    records.append(record)
    print(json.dumps(record), flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    jpegs = make_corpus(_IMAGES.value, np.random.default_rng(_SEED.value))
    sizes = np.array([PIL.Image.open(io.BytesIO(j)).size for j in jpegs])
    raw, folder = write_corpus(jpegs, root)
    tfds_dir = str(root / 'tfds')
    prepare('imagenet2012', raw_data_dir=str(raw), tfds_dir=tfds_dir, allow_download=False)
    corpus = {'images': len(jpegs), 'mean_width': float(sizes[:, 0].mean()),
              'mean_height': float(sizes[:, 1].mean()), 'mean_kb': float(np.mean([len(j) for j in jpegs]) / 1e3)}
    emit({'kind': 'profile', 'images': min(500, len(jpegs)), 'corpus': corpus,
          **profile_stages(jpegs[:500], np.random.default_rng(_SEED.value))})
    rates: dict[tuple[str, int], list[float]] = {}
    for round_index in range(_ROUNDS.value):
      for workers in (int(w) for w in _WORKERS.value):
        loaders = _LOADERS.value if round_index % 2 == 0 else _LOADERS.value[::-1]
        for loader in loaders:
          load_before = os.getloadavg()[0]
          if loader == 'torchvision':
            result = time_torchvision(folder, workers, _IMAGES.value)
          else:
            result = time_zoo(tfds_dir, workers, draft=loader == 'zoo', count=_IMAGES.value)
          rates.setdefault((loader, workers), []).append(result)
          emit({'kind': 'timing', 'loader': loader, 'workers': workers, 'round': round_index,
                'batch_size': _BATCH.value, 'image_size': _SIZE.value, **result,
                'images_per_s_per_worker': result['images_per_s'] / workers,
                'loadavg_1min_before': load_before, 'corpus': corpus})
    for (loader, workers), results in sorted(rates.items()):
      median = {key: float(np.median([r[key] for r in results])) for key in ('images_per_s', 'images_per_cpu_s')}
      emit({'kind': 'summary', 'loader': loader, 'workers': workers, 'rounds': len(results), **median,
            'images_per_s_per_worker': median['images_per_s'] / workers,
            'cores_to_feed_accelerator': _TARGET.value / median['images_per_cpu_s'],
            'accelerator_images_per_s': _TARGET.value, 'corpus': corpus})
  if _OUT.value:
    with open(_OUT.value, 'a') as file:
      file.writelines(json.dumps(record) + '\n' for record in records)


if __name__ == '__main__':
  app.run(main)
