"""Parsing a run's gin files and bindings.

gin resolves a file name, and the files it ``include``s, against the
working directory first and then against the search paths; adding the
configs folder (and the folder of each given file) as search paths makes
``include 'base/protocol.gin'`` work wherever the tool is started from.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
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
      FileNotFoundError: a file not found, naming where it was looked for
        and the closest existing name.
    """
    for path in search_paths:
        add_search_path(path)
    for name in gin_files:
        check_config_file(name)
        folder = os.path.dirname(name)
        if folder and os.path.isdir(folder):
            add_search_path(folder)
    with _quiet_resource_lookups():
        gin.parse_config_files_and_bindings(
            list(gin_files), list(gin_bindings), skip_unknown=skip_unknown
        )


def check_config_file(name):
    """FileNotFoundError unless ``name`` is a file here or on a search path.

    gin itself fails on a missing top-level file with a TypeError from deep
    inside its resource reader.
    """
    folders = [os.getcwd(), *sorted(_SEARCH_PATHS)]
    if any(os.path.isfile(os.path.join(folder, name)) for folder in folders):
        return
    # Names in the folder the name points to, wherever it is looked for.
    known = {os.path.join(os.path.dirname(name), os.path.basename(path)) for folder in folders
             for path in glob.glob(os.path.join(folder, os.path.dirname(name), "*.gin"))}
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    raise FileNotFoundError(f"No gin file {name!r} in the working directory or {sorted(_SEARCH_PATHS)}{hint}")
