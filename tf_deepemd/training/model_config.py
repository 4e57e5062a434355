"""The episode model a run's gin configuration describes (`configured_model`).

There is one ``make_model`` contract, `tf_deepemd.make_model`; gin knows
`configured_model` under that name, so ``make_model.<argument>`` binds an
argument of `tf_deepemd.make_model`: the method by name (``make_model.encoder =
'grid'``, ``make_model.head = 'protonet'``, ``make_model.prototypes =
'mean'``), the backbone, and options of a head given by name
(``make_model.node_weights = 'uniform'``, ``make_model.gradient_mode =
'kkt'``, ``make_model.temperature = ...``). The layers it builds by name
are constructed by gin, so their own arguments bind by class name
(``DeepEMDHead.l2_strength = 1e-6``, ``SFC.learning_rate = 100.0``); a
``make_model`` head option overrides the same ``DeepEMDHead`` binding.

The test stage's model takes the bindings scoped ``test/`` over the others
(`configured_test_model`): ``test/SamplingEncoder.num_patches = 25`` tests with
25 patches a model trained and validated with the unscoped number (the
official ``-num_patch`` of ``eval.py`` apart from that of ``train_meta.py``).
Such settings (patches, pyramid, SFC) add no weights: the trained ones load.
"""

import gin

from tf_deepemd.models import factory
from tf_deepemd.run_folder import TEST
from tf_deepemd.training.settings_record import gin_bindings

CONFIGURABLE_LAYERS = (
    *factory.ENCODERS.values(),
    *factory.HEADS.values(),
    *factory.PROTOTYPES.values(),
)
for _layer_class in CONFIGURABLE_LAYERS:
    # Registered, not decorated: @gin.configurable on a Keras layer class
    # breaks its construction (docs/training.md, "gin and Keras layers").
    gin.register(_layer_class, module="tf_deepemd")


def _build_configured(layer_class, *args, **options):
    return gin.get_configurable(layer_class)(*args, **options)


@gin.configurable("make_model")
def configured_model(**options):
    """`tf_deepemd.make_model` with the run's ``make_model.*`` bindings as ``options``.

    The layers it builds by name are constructed with their own gin
    bindings (``SFC.learning_rate = 100.0``).
    """
    return factory.make_model(build_layer=_build_configured, **options)


def binds_test_model():
    """Whether any gin binding is scoped to the test stage (``test/...``)."""
    return any(name.startswith(TEST + "/") for name in gin_bindings(gin.config_str()))


def configured_test_model(**options):
    """`configured_model` under the ``test`` scope: the test stage's model."""
    with gin.config_scope(TEST):
        return configured_model(**options)
