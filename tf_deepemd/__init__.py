"""tf_deepemd: DeepEMD few-shot classification as TensorFlow/Keras building blocks.

Public entry points:

* `tf_deepemd.emd` / `tf_deepemd.solve_emd`: batched, differentiable Earth
  Mover's Distance (transportation LP) solver.
* `tf_deepemd.EMDLayer`: the Keras layer around it.
"""

from tf_deepemd.ops.emd import EMDResult, emd, solve_emd
from tf_deepemd.layers.emd_layer import EMDLayer

__version__ = "0.1.0"

__all__ = ["EMDLayer", "EMDResult", "emd", "solve_emd"]
