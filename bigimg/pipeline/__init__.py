"""Pipelines: TOML configs validated into a lazy graph written to Zarr.

:mod:`~bigimg.pipeline.registry` (parameter models and the op table),
:mod:`~bigimg.pipeline.ops` (every op and source, registered in one place)
and :mod:`~bigimg.pipeline.config` (config loading and :class:`Pipeline`).
"""

from bigimg.errors import ConfigError
from bigimg.pipeline.config import Pipeline, load_config, parse_config, plan
from bigimg.pipeline.ops import OPS, SOURCES

__all__ = ["OPS", "SOURCES", "ConfigError", "Pipeline", "load_config", "parse_config", "plan"]
