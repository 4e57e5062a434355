"""`ClassMeanPrototypes`: one prototype node set per class, the mean of its support node sets.

The prototype slot of `DeepEMD` takes any layer with this call contract:
``call(support_nodes [S, M, C], support_labels int [S], way=None, head=None)
-> prototypes [way, M, C]``, where ``head`` is the matching head the
prototypes are for (a fitter such as `SFC` scores with it; the class mean
does not need it); for E episodes at once (`DeepEMD` in inference)
``([E, S, M, C], [E, S]) -> [E, way, M, C]``, each episode's prototypes
those it gets alone. ``way`` (by keyword: Keras takes only tensors
positionally) is a Python int, an int scalar tensor, or None for
``max(support_labels) + 1``; labels are checked at run time (each in
``[0, way)``, every class present).
"""

import keras

from tf_deepemd.ops.checks import check_support_set
from tf_deepemd.ops.prototypes import class_means


@keras.saving.register_keras_serializable(package="tf_deepemd")
class ClassMeanPrototypes(keras.layers.Layer):
    """Per-class mean of the raw support node sets (1-shot: the support nodes themselves).

    Differentiable: in training the encoder learns through the prototypes.
    No weights, no options.
    """

    def call(self, support_nodes, support_labels, way=None, head=None):
        support_nodes, support_labels, way = check_support_set(support_nodes, support_labels, way)
        return class_means(support_nodes, support_labels, way)

    def compute_output_shape(self, support_nodes_shape, support_labels_shape):
        return tuple(support_nodes_shape)[:-3] + (None,) + tuple(support_nodes_shape)[-2:]
