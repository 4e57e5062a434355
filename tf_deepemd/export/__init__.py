"""Export for TensorFlow Serving (one concept per module).

* `signatures`: the ``serving_default`` (whole few-shot episode), ``embed``
  and ``emd`` signatures, their input names, dtypes and shapes;
* `request_checks`: run-time checks that turn a bad request into an
  `InvalidArgumentError` naming the problem;
* `preprocessing`: evaluation preprocessing in the graph (reused from
  `tf_deepemd.data.preprocessing`) and the dataset's normalisation;
* `exporter`: `export_for_serving` (a model -> ``<base>/<version>/``) through
  `keras.export.ExportArchive`;
* `serving_layout`: TF Serving's version folders, written atomically;
* `warmup`: TF Serving's warmup file (``PredictionLog`` records);
* `from_run`: rebuild and restore a gin-configured training run and export
  it (``tools/export.py``).
"""

from tf_deepemd.export.exporter import ExportResult, export_for_serving, write_saved_model
from tf_deepemd.export.serving_layout import existing_versions, next_version
from tf_deepemd.export.signatures import EMBED, EMD, EPISODE, INPUTS, OUTPUTS, ServingSignatures

__all__ = [
    "EMBED",
    "EMD",
    "EPISODE",
    "INPUTS",
    "OUTPUTS",
    "ExportResult",
    "ServingSignatures",
    "existing_versions",
    "export_for_serving",
    "next_version",
    "write_saved_model",
]
