"""tf_deepemd: DeepEMD few-shot classification as TensorFlow/Keras building blocks.

Public entry points:

* `tf_deepemd.emd` / `tf_deepemd.solve_emd`: batched, differentiable Earth
  Mover's Distance (transportation LP) solver: a compiled kernel on CPU
  (`tf_deepemd.kernel_available()`), stock TensorFlow ops on GPU and in
  exported SavedModels (`tf_deepemd.stock_ops_only()`).
* `tf_deepemd.EMDLayer`: the Keras layer around it.
* `tf_deepemd.DeepEMDHead`: DeepEMD logits of query node sets against
  prototype node sets; `tf_deepemd.SFC`: k-shot prototypes fitted to the
  support set.
* `tf_deepemd.DeepEMD` / `tf_deepemd.make_model`: the episode model, built
  from layers: an encoder, a prototype layer (class mean or SFC) and a head
  (DeepEMD, ProtoNet, cosine or your own); `tf_deepemd.PretrainClassifier` /
  `tf_deepemd.make_pretrain_model`: the pre-training classifier.
* `tf_deepemd.load_official_checkpoint`: loads the official PyTorch
  DeepEMD checkpoints (``max_acc.pth``; no PyTorch needed).
* `tf_deepemd.data`: datasets and episodic `tf.data` pipelines
  (`tf_deepemd.data.make_episode_dataset`).
"""

from tf_deepemd.ops.emd import EMDResult, emd, kernel_available, solve_emd, stock_ops_only
from tf_deepemd.layers.emd_layer import EMDLayer
from tf_deepemd.layers.deepemd_head import DeepEMDHead
from tf_deepemd.layers.sfc import SFC
from tf_deepemd.models.deepemd import DeepEMD
from tf_deepemd.models.factory import make_model, make_pretrain_model
from tf_deepemd.models.pretrain import PretrainClassifier
from tf_deepemd.official.checkpoint import load_official_checkpoint
from tf_deepemd import data  # noqa: E402  (a subpackage, importable as tf_deepemd.data)
from tf_deepemd.version import __version__

__all__ = [
    "DeepEMD",
    "DeepEMDHead",
    "EMDLayer",
    "EMDResult",
    "PretrainClassifier",
    "SFC",
    "__version__",
    "data",
    "emd",
    "kernel_available",
    "load_official_checkpoint",
    "make_model",
    "make_pretrain_model",
    "solve_emd",
    "stock_ops_only",
]
