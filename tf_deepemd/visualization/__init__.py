"""Figures (PNG, matplotlib as the optional ``plots`` extra): matchings, episodes, training curves.

One concept per module:

* `matching`: `match_images` (node weights, flows, score of a query/support
  pair through a model's DeepEMD head) and `plot_matching` (heatmaps of the
  node weights, lines for the strongest flows, the flow matrix);
* `episode`: `sample_episode`, `predict_episode`, `plot_episode` (queries
  with predicted and true classes);
* `training_curves`: `plot_training_curves` (accuracy and loss per epoch
  from ``log.csv``) and the `AccuracyPlot` Keras callback;
* `figures`: the on-demand matplotlib import and PNG writing;
* `from_run`: `visualize_run`, the top level of ``tools/visualize.py``.

Importing this package does not import matplotlib; drawing does, with an
ImportError naming ``pip install 'tf_deepemd[plots]'`` if it is missing.
"""

from tf_deepemd.visualization.episode import EpisodeImages, plot_episode, predict_episode, sample_episode
from tf_deepemd.visualization.matching import ImageMatch, match_images, node_boxes, plot_matching, weight_heatmap
from tf_deepemd.visualization.training_curves import AccuracyPlot, plot_training_curves, read_csv_log

__all__ = [
    "AccuracyPlot",
    "EpisodeImages",
    "ImageMatch",
    "match_images",
    "node_boxes",
    "plot_episode",
    "plot_matching",
    "plot_training_curves",
    "predict_episode",
    "read_csv_log",
    "sample_episode",
    "weight_heatmap",
]
