"""Input pipelines: TFDS datasets (array_record, no TensorFlow) fed through grain."""

from zoo.data.pipeline import Pipeline, build_pipeline
from zoo.data.preparation import prepare
from zoo.errors import DataUnavailableError

__all__ = ['DataUnavailableError', 'Pipeline', 'build_pipeline', 'prepare']
