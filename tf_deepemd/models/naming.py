"""Short method labels of episode models, for results and logs."""


def method_name(model):
    """A short method label for results: e.g. ``deepemd_fcn``, ``deepemd_grid_uniform``, ``protonet``."""
    if model.head_name != "deepemd":
        return model.head_name
    encoder = {"FCNEncoder": "fcn", "GridEncoder": "grid", "SamplingEncoder": "sampling"}.get(
        type(model.encoder).__name__, type(model.encoder).__name__)
    suffix = "_uniform" if model.node_weights == "uniform" else ""
    return f"deepemd_{encoder}{suffix}"
