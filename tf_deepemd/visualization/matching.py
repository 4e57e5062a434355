"""Pictures of one DeepEMD matching: node weights and the strongest flows.

`match_images` encodes a query and a support image with a model's encoder
and runs its `DeepEMDHead.match`, keeping everything the picture needs:
the node weights of both sides (the cross-reference weights say which
regions DeepEMD considers relevant to the other image), the optimal flow
between the node sets, the similarity map and the score. `node_boxes`
places every node on the image: a cell of the feature map (FCN, and its
pyramid levels' pooling bins) or a crop (Grid, Sampling encoders).

`plot_matching` draws the two images as they are, side by side; below each
image, a heatmap of its node weights (a pixel shows the mean weight of the
nodes whose region covers it) with the node numbers, and lines between the
regions joined by the strongest flows (width proportional to the flow);
and the full flow matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_deepemd.encoders.crop_encoder import CropEncoder
from tf_deepemd.encoders.fcn import FCNEncoder
from tf_deepemd.layers.deepemd_head import DeepEMDHead
from tf_deepemd.ops.checks import check_choice
from tf_deepemd.ops.matching import NODE_WEIGHTS
from tf_deepemd.visualization.figures import as_display_image, new_figure, save_figure

__all__ = ["ImageMatch", "match_images", "node_boxes", "plot_matching", "weight_heatmap"]


@dataclasses.dataclass(frozen=True)
class ImageMatch:
    """One query/support matching (N query nodes, M support nodes).

    Attributes:
      flow: float64 ``[N, M]`` optimal flow (total N).
      similarity: float64 ``[N, M]`` cosine of the centred nodes.
      query_weights: float64 ``[N]`` query node masses (sum N, mean 1).
      support_weights: float64 ``[M]`` support node masses (sum M).
      query_boxes, support_boxes: float64 ``[N, 4]`` / ``[M, 4]`` node regions
        ``(y0, x0, y1, x1)`` as fractions of the image side.
      score: ``sum(similarity * flow) / N``, the flow-weighted mean cosine.
      logit: the model's logit, ``temperature * score``.
      node_weights: ``'cross_reference'`` or ``'uniform'``.
    """

    flow: np.ndarray
    similarity: np.ndarray
    query_weights: np.ndarray
    support_weights: np.ndarray
    query_boxes: np.ndarray
    support_boxes: np.ndarray
    score: float
    logit: float
    node_weights: str


def _pooling_bins(size, bins):
    """PyTorch adaptive-pooling bins of ``size`` cells: ``[bins, 2]`` (start, end) cells."""
    index = np.arange(bins)
    return np.stack([(index * size) // bins, -((-(index + 1) * size) // bins)], axis=1)


def node_boxes(encoder, image_size) -> np.ndarray:
    """Region of each node of ``encoder`` on an ``image_size`` image.

    Args:
      encoder: `FCNEncoder` (feature-map cells; pyramid levels first, as its
        nodes) or a `CropEncoder` (`GridEncoder`, `SamplingEncoder`: their
        inference crops).
      image_size: int or ``(height, width)``.

    Returns:
      float64 ``[K, 4]`` boxes ``(y0, x0, y1, x1)`` in fractions of the
      image side, in node order.
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    height, width = int(height), int(width)
    if isinstance(encoder, FCNEncoder):
        _, rows, cols, _ = encoder.backbone.compute_output_shape((1, height, width, 3))
        boxes = []
        for level in list(encoder.feature_pyramid) + [None]:
            row_bins = _pooling_bins(rows, level) if level else np.stack([np.arange(rows), np.arange(1, rows + 1)], 1)
            col_bins = _pooling_bins(cols, level) if level else np.stack([np.arange(cols), np.arange(1, cols + 1)], 1)
            for r0, r1 in row_bins:  # row-major, as the encoder flattens
                for c0, c1 in col_bins:
                    boxes.append((r0 / rows, c0 / cols, r1 / rows, c1 / cols))
        return np.asarray(boxes, np.float64)
    if isinstance(encoder, CropEncoder):
        pixel_boxes, _ = encoder.crop_boxes(tf.zeros([1, height, width, 3]), training=False)
        pixel_boxes = np.asarray(pixel_boxes, np.float64)[0]
        return pixel_boxes / np.array([height, width, height, width], np.float64)
    raise ValueError(
        f"`encoder` {type(encoder).__name__} has no known node layout (FCNEncoder, GridEncoder and "
        "SamplingEncoder have)."
    )


def weight_heatmap(boxes, weights, resolution: int = 64) -> np.ndarray:
    """``[resolution, resolution]`` map: mean weight of the nodes covering each pixel.

    Args:
      boxes: ``[K, 4]`` fractional boxes (`node_boxes`).
      weights: ``[K]`` node weights.
    """
    boxes = np.asarray(boxes, np.float64)
    weights = np.asarray(weights, np.float64)
    centres = (np.arange(resolution) + 0.5) / resolution
    inside_rows = (centres[None, :] >= boxes[:, 0:1]) & (centres[None, :] < boxes[:, 2:3])  # [K, R]
    inside_cols = (centres[None, :] >= boxes[:, 1:2]) & (centres[None, :] < boxes[:, 3:4])
    cover = inside_rows[:, :, None] & inside_cols[:, None, :]  # [K, R, R]
    count = cover.sum(0)
    total = np.tensordot(weights, cover.astype(np.float64), axes=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _check_image(image, name):
    image = tf.convert_to_tensor(image, tf.float32)
    if image.shape.rank != 3 or image.shape[-1] != 3:
        raise ValueError(f"`{name}` must be one preprocessed image [height, width, 3], got {image.shape}.")
    return image


def match_images(model, query_image, support_image, node_weights: Optional[str] = None) -> ImageMatch:
    """Matches a support image to a query image with a model's encoder and DeepEMD head.

    Args:
      model: a `DeepEMD` model (its ``encoder`` and, for a DeepEMD head, its
        head settings; other heads get a default `DeepEMDHead`).
      query_image, support_image: preprocessed float ``[H, W, 3]`` (as the
        model's input; the same size).
      node_weights: ``'cross_reference'`` or ``'uniform'``; default the
        model head's.

    Returns:
      An `ImageMatch`.
    """
    query_image = _check_image(query_image, "query_image")
    support_image = _check_image(support_image, "support_image")
    if query_image.shape != support_image.shape:
        raise ValueError(
            f"`support_image` {support_image.shape} and `query_image` {query_image.shape} must have "
            "the same size."
        )
    head = getattr(model, "head", None)
    if node_weights is not None:
        check_choice("node_weights", node_weights, NODE_WEIGHTS)
    if not isinstance(head, DeepEMDHead):
        head = DeepEMDHead(node_weights=node_weights or "cross_reference")
    elif node_weights is not None and node_weights != head.node_weights:
        head = DeepEMDHead.from_config({**head.get_config(), "node_weights": node_weights})
    nodes = model.encoder(tf.stack([query_image, support_image]), training=False)
    match = {key: np.asarray(value, np.float64) for key, value in head.match(nodes[:1], nodes[1:]).items()}
    boxes = node_boxes(model.encoder, tuple(query_image.shape[:2]))
    if len(boxes) != nodes.shape[1]:
        raise ValueError(f"The encoder gives {nodes.shape[1]} nodes but its layout has {len(boxes)} regions.")
    logit = float(match["logits"][0, 0])
    return ImageMatch(
        flow=match["flow"][0, 0],
        similarity=match["similarity"][0, 0],
        query_weights=match["source_weights"][0, 0],
        support_weights=match["target_weights"][0, 0],
        query_boxes=boxes,
        support_boxes=boxes,
        score=logit / head.temperature,
        logit=logit,
        node_weights=head.node_weights,
    )


def _centres(boxes):
    return (boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2  # x, y


def plot_matching(
    query_image,
    support_image,
    match: ImageMatch,
    *,
    num_flows: int = 10,
    query_title: str = "query",
    support_title: str = "support",
    title: Optional[str] = None,
    path: Optional[str] = None,
):
    """Both images; below them their node weights and the strongest flows; the flow matrix.

    Args:
      query_image, support_image: display images ``[H, W, 3]``, uint8 or
        float in [0, 1] (not the normalised model input).
      match: from `match_images`.
      num_flows: lines drawn for the strongest flows.
      query_title, support_title: panel titles (e.g. with class names).
      title: figure title (default: the weights and the score).
      path: write a PNG there.

    Returns:
      The matplotlib `Figure`.
    """
    from matplotlib import cm, colormaps, colors
    from matplotlib.lines import Line2D
    from matplotlib.patches import ConnectionPatch

    if int(num_flows) < 1:
        raise ValueError(f"`num_flows` must be >= 1, got {num_flows}.")
    query_image = as_display_image(query_image, "query_image")
    support_image = as_display_image(support_image, "support_image")
    flow = match.flow
    figure = new_figure(15.0, 8.6)
    # Top: the images as they are; below each, its node weights with the
    # strongest flows between them (an empty column leaves room for the
    # lines), so that no line or colour covers an image; right: the flow matrix.
    grid = figure.add_gridspec(2, 4, width_ratios=(1.0, 0.3, 1.0, 1.1))
    axes_query, axes_support = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 2])
    heat_query, heat_support = figure.add_subplot(grid[1, 0]), figure.add_subplot(grid[1, 2])
    axes_flow = figure.add_subplot(grid[:, 3])

    weight_max = max(match.query_weights.max(), match.support_weights.max())
    weight_norm = colors.Normalize(vmin=0.0, vmax=weight_max)
    heat_cmap = "inferno"
    panels = (
        (axes_query, heat_query, query_image, match.query_boxes, match.query_weights, query_title),
        (axes_support, heat_support, support_image, match.support_boxes, match.support_weights, support_title),
    )
    for axes, heat_axes, image, boxes, weights, panel_title in panels:
        x, y = _centres(boxes)
        axes.imshow(image, extent=(0, 1, 1, 0), interpolation="nearest")
        axes.set_title(panel_title, fontsize=10)
        heat_axes.imshow(weight_heatmap(boxes, weights), extent=(0, 1, 1, 0), cmap=heat_cmap, norm=weight_norm,
                         interpolation="nearest")
        heat_axes.set_title(f"its node weights ({match.node_weights.replace('_', '-')}) and flows", fontsize=10)
        heat_axes.scatter(x, y, s=8, c="white", edgecolors="black", linewidths=0.4, zorder=3)
        if len(x) <= 49:  # node numbers, as on the flow matrix's axes and in the legend
            for number, (node_x, node_y) in enumerate(zip(x, y)):
                heat_axes.annotate(str(number), (node_x, node_y), xytext=(3, 3), textcoords="offset points",
                                   fontsize=7, color="white", zorder=6)
        for panel in (axes, heat_axes):
            panel.set_xlim(0, 1)
            panel.set_ylim(1, 0)
            panel.set_xticks([])
            panel.set_yticks([])
    figure.colorbar(
        cm.ScalarMappable(norm=weight_norm, cmap=heat_cmap), ax=[heat_query, heat_support],
        location="bottom", shrink=0.6, pad=0.02, label="node weight (mean 1)",
    )

    # The strongest flows: one colour each (the same on the flow matrix),
    # width proportional to the flow; the strongest is drawn last (on top).
    count = min(int(num_flows), flow.size)
    strongest = np.argsort(flow, axis=None, kind="stable")[::-1][:count]
    rows, cols = np.unravel_index(strongest, flow.shape)
    query_x, query_y = _centres(match.query_boxes)
    support_x, support_y = _centres(match.support_boxes)
    flow_max = max(flow.max(), 1e-12)
    palette = [colormaps["tab10"](rank % 10) for rank in range(count)]
    handles = []
    for rank in reversed(range(count)):
        i, j = rows[rank], cols[rank]
        line_width = 0.8 + 3.7 * flow[i, j] / flow_max
        figure.add_artist(ConnectionPatch(
            xyA=(query_x[i], query_y[i]), coordsA=heat_query.transData,
            xyB=(support_x[j], support_y[j]), coordsB=heat_support.transData,
            color=palette[rank], alpha=0.9, linewidth=line_width, zorder=4,
        ))
        heat_query.scatter(query_x[i], query_y[i], s=40, color=palette[rank], edgecolors="white", zorder=5)
        heat_support.scatter(support_x[j], support_y[j], s=40, color=palette[rank], edgecolors="white", zorder=5)
        handles.append(Line2D([], [], color=palette[rank], linewidth=line_width,
                              label=f"{i} -> {j}: {flow[i, j]:.2f}"))
    figure.legend(
        handles=handles[::-1], title=f"{count} strongest flows\n(query node -> support node: flow)",
        loc="outside right upper", fontsize=8, title_fontsize=8, framealpha=0.9,
    )

    image = axes_flow.imshow(flow, cmap="Greys", interpolation="nearest", aspect="equal")
    axes_flow.scatter(cols, rows, s=60, facecolors="none", edgecolors=palette, linewidths=1.8)
    axes_flow.set_xlabel("support node")
    axes_flow.set_ylabel("query node")
    axes_flow.set_title(f"optimal flow ({flow.shape[0]} x {flow.shape[1]} nodes, total {flow.sum():.1f});\n"
                        "circles: the flows drawn as lines", fontsize=10)
    figure.colorbar(image, ax=axes_flow, label="flow", shrink=0.45)
    figure.suptitle(title or (
        f"DeepEMD matching with {match.node_weights.replace('_', '-')} weights: score "
        f"{match.score:.3f} (flow-weighted mean cosine)"
    ))
    if path:
        save_figure(figure, path)
    return figure
