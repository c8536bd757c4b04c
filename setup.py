"""Packaging: every package under zoo/, plus experiments/configs shipped as `zoo.configs` (metadata in setup.cfg)."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=['zoo', 'zoo.*']) + ['zoo.configs'],
      package_dir={'zoo.configs': 'experiments/configs'})
