"""Short method labels of episode models, for results and logs."""

from tf_deepemd.layers.deepemd_head import DeepEMDHead
from tf_deepemd.models.factory import ENCODERS, HEADS


def _layer_name(layer, table):
    """The factory name of ``layer``'s class, else the class name."""
    names = {layer_class: name for name, layer_class in table.items()}
    return names.get(type(layer), type(layer).__name__)


def method_name(model):
    """A short label of a `DeepEMD` model's method.

    ``deepemd_<encoder>`` (``deepemd_fcn``, ``deepemd_grid``, ...) with
    ``_uniform`` for uniform node weights; the head's factory name for
    other heads (``protonet``, ``cosine``), else its class name.
    """
    if not isinstance(model.head, DeepEMDHead):
        return _layer_name(model.head, HEADS)
    suffix = "_uniform" if model.head.node_weights == "uniform" else ""
    return f"deepemd_{_layer_name(model.encoder, ENCODERS)}{suffix}"
