"""Parsing a run's gin files and bindings.

gin resolves a file name, and the files it ``include``s, against the
working directory first and then against the search paths; adding the
configs folder (and the folder of each given file) as search paths makes
``include 'base/protocol.gin'`` work wherever the tool is started from.
"""

from __future__ import annotations

import contextlib
import logging
import os

import gin

# Importing these registers every configurable a config may bind.
from tf_deepemd.training import (  # noqa: F401
    experiment, meta_train, model_config, optimizers, pretrain, strategy,
)

_SEARCH_PATHS = set()


class _DropGinResourceMisses(logging.Filter):
    """Hides gin's resource-reader lookups of include names.

    gin tries each name against the working directory first and, failing
    that, as a Python package resource, which logs ``ERROR Path not found``
    on the root logger even when the next search path has the file.
    """

    def filter(self, record):
        return record.module != "resource_reader"


@contextlib.contextmanager
def _quiet_resource_lookups():
    root = logging.getLogger()
    quiet = _DropGinResourceMisses()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def add_search_path(path):
    """Adds ``path`` to gin's search paths once."""
    path = os.path.abspath(path)
    if path not in _SEARCH_PATHS:
        _SEARCH_PATHS.add(path)
        gin.add_config_file_search_path(path)


def parse_config(gin_files=(), gin_bindings=(), search_paths=(), skip_unknown=False):
    """Parses ``gin_files`` then ``gin_bindings`` (later ones win).

    Args:
      gin_files: paths or names found on the search paths.
      gin_bindings: strings such as ``"run_experiment.data_dir = '/data'"``.
      search_paths: folders for file names and includes (e.g. the repo's
        ``gin_configs``).
      skip_unknown: passed to gin (False: an unknown configurable is an error).

    Raises:
      ValueError: unknown configurable or parameter, malformed binding.
      OSError: a file not found (gin's message lists where it looked).
    """
    for path in search_paths:
        add_search_path(path)
    for name in gin_files:
        folder = os.path.dirname(name)
        if folder and os.path.isdir(folder):
            add_search_path(folder)
    with _quiet_resource_lookups():
        gin.parse_config_files_and_bindings(
            list(gin_files), list(gin_bindings), skip_unknown=skip_unknown
        )
