"""Which classes and images make up each episode: seeded NumPy integer logic.

No TensorFlow and no images here, so the sampler can be tested on its own
(Meta-Dataset keeps `sampling` apart from readers and the pipeline the same
way).

Semantics (those of the official DeepEMD sampler, `samplers.py`):

* each episode picks `way` classes uniformly without replacement from the
  split, then `shot + query` images per chosen class uniformly without
  replacement;
* the label of an image is the position of its class in the episode,
  ``0 .. way - 1``;
* images are laid out **interleaved** (shot-major): position
  ``p = r * way + c`` holds the ``r``-th image of episode class ``c``. The
  first ``way * shot`` positions are the support set, the rest the query set,
  so ``support_labels = tile(arange(way), shot)`` and
  ``query_labels = tile(arange(way), query)``; a support tensor reshaped to
  ``[shot, way, ...]`` groups the shots of each class along axis 0.

Episode ``i`` of seed ``s`` is drawn from its own generator seeded with
``(s, i)``, so it does not depend on how many episodes are requested: the
first 100 episodes of a 1,000-episode run are the 100 episodes of a
100-episode run, in every process.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class EpisodeShape:
    """Number of classes and images per class of an episode.

    Attributes:
      way: classes per episode, >= 1.
      shot: support images per class, >= 1.
      query: query images per class, >= 1.
    """

    way: int
    shot: int
    query: int

    def __post_init__(self):
        for field in ("way", "shot", "query"):
            check_integer(field, getattr(self, field), minimum=1)

    @property
    def images_per_class(self) -> int:
        return self.shot + self.query

    @property
    def num_support(self) -> int:
        return self.way * self.shot

    @property
    def num_query(self) -> int:
        return self.way * self.query

    @property
    def num_images(self) -> int:
        return self.way * self.images_per_class

    def support_labels(self) -> np.ndarray:
        """int32 ``[way * shot]``: ``tile(arange(way), shot)``."""
        return np.tile(np.arange(self.way, dtype=np.int32), self.shot)

    def query_labels(self) -> np.ndarray:
        """int32 ``[way * query]``: ``tile(arange(way), query)``."""
        return np.tile(np.arange(self.way, dtype=np.int32), self.query)


def check_episode_feasible(class_sizes: Sequence[int], shape: EpisodeShape) -> None:
    """Raises ValueError if episodes of `shape` cannot be drawn from the classes.

    Args:
      class_sizes: number of images of each class of the split.
      shape: the episode shape.
    """
    num_classes = len(class_sizes)
    if shape.way > num_classes:
        raise ValueError(
            f"`way`={shape.way} is larger than the number of classes in the split "
            f"({num_classes})."
        )
    too_small = [c for c, size in enumerate(class_sizes) if size < shape.images_per_class]
    if too_small:
        raise ValueError(
            f"{len(too_small)} class(es) have fewer than shot+query="
            f"{shape.images_per_class} images: class indices {too_small[:10]}"
            f"{' ...' if len(too_small) > 10 else ''}."
        )


def sample_episode(
    indices_by_class: Sequence[np.ndarray], shape: EpisodeShape, seed: int, episode_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws one episode.

    Args:
      indices_by_class: for each class of the split, int array of the indices
        (into the split's image list) of its images.
      shape: the episode shape.
      seed: non-negative int.
      episode_index: non-negative int; episode `episode_index` of `seed`.

    Returns:
      classes: int64 ``[way]``, the split class of each episode label.
      image_indices: int64 ``[shot + query, way]``, interleaved layout:
        ``image_indices[r, c]`` is the ``r``-th image of episode class ``c``
        (rows ``< shot`` are support).
    """
    rng = np.random.default_rng([seed, episode_index])
    classes = rng.choice(len(indices_by_class), size=shape.way, replace=False)
    columns = []
    for cls in classes:
        members = indices_by_class[cls]
        picks = rng.choice(len(members), size=shape.images_per_class, replace=False)
        columns.append(np.asarray(members)[picks])
    return classes.astype(np.int64), np.stack(columns, axis=1).astype(np.int64)


def sample_episodes(
    indices_by_class: Sequence[np.ndarray], shape: EpisodeShape, num_episodes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws episodes ``0 .. num_episodes - 1`` of `seed`.

    Args:
      indices_by_class: as in `sample_episode`.
      shape: the episode shape.
      num_episodes: int >= 1.
      seed: non-negative int.

    Returns:
      classes: int64 ``[num_episodes, way]``.
      image_indices: int64 ``[num_episodes, way * (shot + query)]``, each row
        flattened from the interleaved ``[shot + query, way]`` layout: the
        first ``way * shot`` entries are the support images.

    Raises:
      ValueError: `way` exceeds the number of classes, or a class has fewer
        than ``shot + query`` images, or a bad count/seed.
    """
    check_integer("seed", seed, minimum=0, maximum=MAX_SEED)
    check_integer("num_episodes", num_episodes, minimum=1)
    check_episode_feasible([len(members) for members in indices_by_class], shape)
    classes = np.empty((num_episodes, shape.way), np.int64)
    image_indices = np.empty((num_episodes, shape.num_images), np.int64)
    for episode_index in range(num_episodes):
        classes[episode_index], grid = sample_episode(indices_by_class, shape, seed, episode_index)
        image_indices[episode_index] = grid.reshape(-1)
    return classes, image_indices


MAX_SEED = 2**63 - 1  # seeds become int64 tensors in the pipelines


def check_integer(name: str, value, minimum: int, maximum: Optional[int] = None) -> None:
    """Raises ValueError naming `name` unless `value` is an integer in [minimum, maximum]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"`{name}` must be an integer {bounds}, got {value!r}.")
