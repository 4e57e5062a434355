"""matplotlib, imported on demand, and writing figures to PNG files.

matplotlib is an optional dependency (``pip install -e '.[plots]'``): the
library imports it only when a figure is drawn, and raises an ImportError
that says how to install it. Figures are plain `matplotlib.figure.Figure`
objects (no pyplot): no global state, no display backend needed, safe in
training callbacks and headless servers.
"""

from __future__ import annotations

import os

from tf_deepemd.run_folder import atomic_path

INSTALL_HINT = ("matplotlib is needed for figures: pip install -e '.[plots]' in the repository "
                "(or pip install matplotlib).")


def require_matplotlib():
    """The ``matplotlib`` module, or ImportError with the install command."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return matplotlib


def new_figure(width: float, height: float):
    """A `Figure` of ``width x height`` inches with a constrained layout."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(figure, path: str, dpi: int = 120) -> str:
    """Writes ``figure`` as PNG to ``path`` (folders created, atomic rename); returns the path."""
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"`path` must end with .png, got {path!r}.")
    with atomic_path(path, suffix=".png.tmp") as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    return path


def as_display_image(image, name="image"):
    """float ``[H, W, 3]`` in [0, 1] from uint8 pixels or floats in [0, 1].

    Raises ValueError naming ``name`` for another shape.
    """
    import numpy as np

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"`{name}` must have shape [height, width, 3], got {image.shape}.")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)
