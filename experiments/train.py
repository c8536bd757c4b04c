"""Trains a zoo config and prints its test accuracy (the `zoo-train` command; see zoo/cli/train.py).

  python experiments/train.py --config=experiments/configs/mnist_cnn.py --workdir=runs/mnist_cnn \
      [--config.optimizer.learning_rate=0.05] [--data_dir=/path/to/raw/data]
"""

from zoo.cli.train import run

if __name__ == '__main__':
  run()
