"""Few-shot models: `DeepEMD` episodes, the pre-training classifier, factories."""

from tf_deepemd.models.deepemd import DeepEMD
from tf_deepemd.models.factory import make_encoder, make_model, make_pretrain_model
from tf_deepemd.models.naming import method_name
from tf_deepemd.models.pretrain import PretrainClassifier

__all__ = [
    "DeepEMD",
    "PretrainClassifier",
    "make_encoder",
    "make_model",
    "make_pretrain_model",
    "method_name",
]
