"""`GalleryIndex`: a gallery's node sets and global features, embedded once.

Retrieval compares every query with the same gallery, so the gallery goes
through the encoder ONCE: its node sets (the DeepEMD re-ranking input) and
its global features (the shortlist input) are kept with each image's label
and id, and can be saved to / loaded from one ``.npz`` file (no pickles:
``allow_pickle=False`` on load).

The global feature of a node set is the L2-normalised mean node, i.e. the
global-average-pooled feature map for the FCN encoder; the shortlist ranks
by the cosine of these. `global_features` is the one definition used for
gallery and queries alike.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf

from tf_deepemd.run_folder import atomic_path

__all__ = ["FORMAT_VERSION", "GalleryIndex", "build_index", "embed_images", "global_features", "load_index"]

FORMAT_VERSION = 1
_ARRAYS = ("nodes", "global_features", "labels", "ids")


def global_features(nodes):
    """L2-normalised mean node of each node set.

    Args:
      nodes: float ``[B, N, C]`` node sets (array or tensor).

    Returns:
      float32 tensor ``[B, C]`` of unit norm (a zero mean node stays zero).
    """
    nodes = tf.convert_to_tensor(nodes, tf.float32)
    return tf.math.l2_normalize(tf.reduce_mean(nodes, axis=1), axis=-1)


def _check_nodes(nodes, name):
    """float32 ``[B, N, C]`` NumPy array with B, N, C >= 1, or ValueError naming ``name``."""
    nodes = np.asarray(nodes)
    if nodes.ndim != 3:
        raise ValueError(f"`{name}` must have shape [images, nodes, channels], got shape {nodes.shape}.")
    if not np.issubdtype(nodes.dtype, np.floating):
        raise ValueError(f"`{name}` must be a float array, got {nodes.dtype}.")
    if nodes.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: the gallery needs at least one image.")
    if nodes.shape[1] == 0 or nodes.shape[2] == 0:
        raise ValueError(f"`{name}` has no nodes or no channels (shape {nodes.shape}).")
    if not np.all(np.isfinite(nodes)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return nodes.astype(np.float32, copy=False)


@dataclasses.dataclass(frozen=True, eq=False)
class GalleryIndex:
    """An embedded gallery.

    Build it with `GalleryIndex.from_nodes` or `build_index` (they compute
    the global features); the constructor checks that the fields agree.

    Attributes:
      nodes: float32 ``[G, N, C]`` node set of each gallery image.
      global_features: float32 ``[G, C]``, `global_features(nodes)`.
      labels: int64 ``[G]`` class of each image (for evaluation; any ints).
      ids: ``[G]`` unique int64 or str id of each image (what a search
        returns), e.g. positions in a split or file paths.
      metadata: JSON-serialisable dict, e.g. the weights, dataset, split and
        image size the gallery was embedded with.
    """

    nodes: np.ndarray
    global_features: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        nodes = _check_nodes(self.nodes, "nodes")
        size, _, channels = nodes.shape
        features = np.asarray(self.global_features, np.float32)
        if features.shape != (size, channels):
            raise ValueError(
                f"`global_features` must have shape [{size}, {channels}] (one per node set), got "
                f"{features.shape}."
            )
        labels = np.asarray(self.labels)
        if labels.shape != (size,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"`labels` must be {size} integers (one per image), got {labels.dtype} {labels.shape}.")
        ids = np.asarray(self.ids)
        if ids.shape != (size,):
            raise ValueError(f"`ids` must have shape [{size}] (one per image), got {ids.shape}.")
        if ids.dtype.kind not in "iuU":
            raise ValueError(f"`ids` must be integers or strings, got {ids.dtype}.")
        if len(np.unique(ids)) != size:
            raise ValueError("`ids` must be unique: a search result must name one image.")
        metadata = dict(self.metadata or {})
        try:
            json.dumps(metadata)
        except TypeError as error:
            raise ValueError(f"`metadata` must be JSON-serialisable: {error}") from None
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "global_features", features)
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "ids", ids if ids.dtype.kind == "U" else ids.astype(np.int64))
        object.__setattr__(self, "metadata", metadata)

    @classmethod
    def from_nodes(cls, nodes, labels, ids=None, metadata=None) -> "GalleryIndex":
        """An index of already computed node sets.

        Args:
          nodes: float ``[G, N, C]``, G >= 1.
          labels: int ``[G]``.
          ids: ``[G]`` unique ints or strings; default ``0 .. G-1``.
          metadata: JSON-serialisable dict.

        Raises:
          ValueError: naming the argument (empty gallery, shapes, dtypes,
            duplicate ids).
        """
        nodes = _check_nodes(nodes, "nodes")
        if ids is None:
            ids = np.arange(len(nodes), dtype=np.int64)
        return cls(nodes, global_features(nodes).numpy(), labels, ids, metadata or {})

    @property
    def size(self) -> int:
        """Number of gallery images G."""
        return int(self.nodes.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.shape[1])

    @property
    def channels(self) -> int:
        return int(self.nodes.shape[2])

    def save(self, path: str) -> str:
        """Writes the index to ``path`` (``.npz``, uncompressed), atomically; returns the path."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            raise ValueError(f"`path` must end with .npz, got {path!r}.")
        with atomic_path(path, suffix=".npz.tmp") as temporary, open(temporary, "wb") as stream:
            np.savez(
                stream,
                format_version=np.int64(FORMAT_VERSION),
                metadata=np.str_(json.dumps(self.metadata, sort_keys=True)),
                **{name: getattr(self, name) for name in _ARRAYS},
            )
        return path


def load_index(path: str) -> GalleryIndex:
    """Reads an index written by `GalleryIndex.save`.

    Raises:
      ValueError: not an index file or an unknown format version.
      OSError: the file cannot be read.
    """
    with np.load(os.fspath(path), allow_pickle=False) as data:
        missing = [name for name in _ARRAYS + ("format_version", "metadata") if name not in data]
        if missing:
            raise ValueError(f"{path!r} is not a gallery index (missing {missing}).")
        version = int(data["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"{path!r} has index format {version}; this version reads {FORMAT_VERSION}.")
        arrays = {name: data[name] for name in _ARRAYS}
        metadata = json.loads(str(data["metadata"]))
    return GalleryIndex(metadata=metadata, **arrays)


def embed_images(encoder, images, batch_size: int = 64) -> np.ndarray:
    """Node sets of images, in inference mode.

    Args:
      encoder: a region encoder (e.g. ``model.encoder``): float ``[B, H, W,
        3]`` -> ``[B, N, C]``.
      images: preprocessed float ``[B, H, W, 3]`` (array or tensor), or a
        `tf.data.Dataset` of such batches (or of ``(images, ...)`` tuples).
      batch_size: images per encoder call for an array input.

    Returns:
      float32 ``[B, N, C]`` NumPy array.
    """
    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if isinstance(images, tf.data.Dataset):
        batches = images.map(lambda *element: element[0])
    else:
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(f"`images` must have shape [images, height, width, 3], got {images.shape}.")
        if images.shape[0] == 0:
            raise ValueError("`images` is empty.")
        batches = tf.data.Dataset.from_tensor_slices(images).batch(int(batch_size))

    @tf.function(reduce_retracing=True)
    def encode(batch):
        return encoder(batch, training=False)

    parts = [encode(batch).numpy() for batch in batches]
    if not parts:
        raise ValueError("`images` is empty.")
    return np.concatenate(parts).astype(np.float32, copy=False)


def build_index(
    encoder,
    images,
    labels,
    ids=None,
    *,
    batch_size: int = 64,
    metadata: Optional[Mapping[str, Any]] = None,
) -> GalleryIndex:
    """Embeds a gallery once: `embed_images` then `GalleryIndex.from_nodes`.

    Args:
      encoder: the region encoder (e.g. ``model.encoder``).
      images: preprocessed float ``[G, H, W, 3]`` or a dataset of batches
        (as `embed_images`); the image size is recorded in the metadata.
      labels: int ``[G]``; ids: ``[G]`` (default ``0 .. G-1``).
      batch_size, metadata: as in `embed_images` / `GalleryIndex`.
    """
    if not isinstance(images, tf.data.Dataset):
        shape = np.shape(images)
        if len(shape) >= 1 and shape[0] == 0:
            raise ValueError("`images` is empty: the gallery needs at least one image.")
    nodes = embed_images(encoder, images, batch_size)
    metadata = dict(metadata or {})
    spec_shape = (
        images.element_spec[0].shape if isinstance(images.element_spec, tuple) else images.element_spec.shape
    ) if isinstance(images, tf.data.Dataset) else np.shape(images)
    if spec_shape[1] is not None and spec_shape[2] is not None:
        # Queries must be embedded at the same size (`GallerySearch.search_images`).
        metadata.setdefault("image_size", [int(spec_shape[1]), int(spec_shape[2])])
    return GalleryIndex.from_nodes(nodes, labels, ids, metadata)
