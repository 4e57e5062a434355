"""TensorFlow Serving's model folder layout: ``<base>/<version>/saved_model.pb``.

TF Serving watches ``<base>`` (``--model_base_path``, ``/models/<name>`` in
the official container), treats each sub-folder whose name is an integer as
a version, serves the highest one, and reads an optional warmup file from
``<version>/assets.extra/tf_serving_warmup_requests``. It polls the folder,
so a version must appear complete: it is written under a hidden temporary
name and renamed into place (TF Serving skips names that are not integers).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable, Optional

SAVED_MODEL_FILE = "saved_model.pb"
ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = os.path.join(ASSETS_EXTRA, "tf_serving_warmup_requests")


def existing_versions(base_dir: str) -> list[int]:
    """Sorted versions (integer-named sub-folders) present in ``base_dir``."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(base_dir)
        if name.isdigit() and os.path.isdir(os.path.join(base_dir, name))
    )


def next_version(base_dir: str) -> int:
    """One more than the highest existing version, or 1."""
    versions = existing_versions(base_dir)
    return versions[-1] + 1 if versions else 1


def resolve_version(base_dir: str, version: Optional[int]) -> int:
    """``version`` (checked to be >= 1 and not taken) or `next_version`.

    Raises:
      ValueError: a version < 1, or one that already exists (TF Serving
        would not reload a changed version; export a new one instead).
    """
    if version is None:
        return next_version(base_dir)
    version = int(version)
    if version < 1:
        raise ValueError(f"`version` must be >= 1, got {version}.")
    if os.path.exists(os.path.join(base_dir, str(version))):
        raise ValueError(
            f"Version {version} already exists in {base_dir!r}; TF Serving does not reload a "
            f"changed version. Export version {next_version(base_dir)} instead (omit --version)."
        )
    return version


def write_version(base_dir: str, version: int, write: Callable[[str], None]) -> str:
    """Calls ``write(folder)`` on a temporary folder, then moves it to ``<base_dir>/<version>``.

    Returns:
      The version folder's path.
    """
    os.makedirs(base_dir, exist_ok=True)
    final = os.path.join(base_dir, str(version))
    staging = tempfile.mkdtemp(prefix=f".{version}.partial-", dir=base_dir)
    try:
        # mkdtemp makes the folder private (0700); a model server running as
        # another user (e.g. in a container) must be able to read it.
        os.chmod(staging, 0o755)
        write(staging)
        if not os.path.isfile(os.path.join(staging, SAVED_MODEL_FILE)):
            raise RuntimeError(f"The export wrote no {SAVED_MODEL_FILE} into {staging!r}.")
        os.rename(staging, final)  # fails rather than merging if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def check_version_folder(version_dir: str) -> None:
    """Raises ValueError unless ``version_dir`` is an integer-named folder with a SavedModel."""
    name = os.path.basename(os.path.normpath(version_dir))
    if not name.isdigit():
        raise ValueError(f"{version_dir!r}: a TF Serving version folder is named by an integer.")
    if not os.path.isfile(os.path.join(version_dir, SAVED_MODEL_FILE)):
        raise ValueError(f"{version_dir!r} has no {SAVED_MODEL_FILE}.")
    if not os.path.isdir(os.path.join(version_dir, "variables")):
        raise ValueError(f"{version_dir!r} has no variables/ folder.")
