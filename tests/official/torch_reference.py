"""The official DeepEMD model re-expressed in PyTorch from its specification (docs/method.md).

Written from the specification, not from tf_deepemd, as the yardstick of
`tf_deepemd.load_official_checkpoint`: a ResNet-12 whose modules have the
official names (so ``state_dict()`` has the official keys), FCN nodes with
the official feature pyramid, and the 1-shot DeepEMD logits of the
official evaluation path: cross-reference weights on the raw features,
'center' normalisation, cosine similarity map, the exact EMD of every
(query, class) pair (SciPy HiGHS; the official code uses OpenCV) and
``logits = T / N * sum(similarity * flow)``. Inputs are NCHW.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.reference import highs_emd

OFFICIAL_WIDTHS = (64, 160, 320, 640)
TEMPERATURE = 12.5


class BasicBlock(nn.Module):
    """3 x (conv3x3 no bias -> BN), LeakyReLU(0.1) after BN1 and BN2, conv1x1 + BN shortcut,
    add, LeakyReLU(0.1), 2x2 max-pool (docs/method.md, "Backbone")."""

    def __init__(self, in_channels, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.downsample = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x):
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        out = F.leaky_relu(self.bn2(self.conv2(out)), 0.1)
        out = self.bn3(self.conv3(out))
        return F.max_pool2d(F.leaky_relu(out + self.downsample(x), 0.1), 2)


class ResNet12(nn.Module):
    """Keys ``layerK.0.{conv1..3, bn1..3, downsample.0, downsample.1}.*`` as the official one."""

    def __init__(self, widths=OFFICIAL_WIDTHS):
        super().__init__()
        channels = (3,) + tuple(widths)
        for k in range(1, 5):
            setattr(self, f"layer{k}", nn.Sequential(BasicBlock(channels[k - 1], channels[k])))

    def forward(self, x):
        for k in range(1, 5):
            x = getattr(self, f"layer{k}")(x)
        return x


class Network(nn.Module):
    """The official model: ``encoder`` and, in pre-training mode, ``fc`` (Linear on pooled features)."""

    def __init__(self, widths=OFFICIAL_WIDTHS, num_classes=None):
        super().__init__()
        self.encoder = ResNet12(widths)
        if num_classes:
            self.fc = nn.Linear(widths[-1], num_classes)

    def pretrain_logits(self, images):
        return self.fc(F.adaptive_avg_pool2d(self.encoder(images), 1).flatten(1))


def randomise(network, generator):
    """Kaiming fan-out conv weights and random batch-norm statistics and affine parameters
    (the ranges of the shared fixture), so that eval-mode batch norm is not an identity."""
    def uniform(tensor, low, high):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_out) ** 0.5
                )
            elif isinstance(module, nn.BatchNorm2d):
                uniform(module.running_mean, -0.2, 0.2)
                uniform(module.running_var, 0.5, 2.0)
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.2, 0.2)
                module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
            elif isinstance(module, nn.Linear):
                uniform(module.weight, -0.1, 0.1)
                uniform(module.bias, -0.1, 0.1)
    return network.eval()


def fcn_nodes(feature_map, feature_pyramid=()):
    """``[B, C, h, w]`` -> nodes ``[B, C, K]``: each pyramid level (adaptive average pool to
    s x s), then ALWAYS the map itself (docs/method.md, "Region encoders")."""
    levels = [F.adaptive_avg_pool2d(feature_map, s).flatten(2) for s in feature_pyramid]
    return torch.cat(levels + [feature_map.flatten(2)], dim=2)


def deepemd_logits(query_nodes, support_nodes, temperature=TEMPERATURE):
    """1-shot DeepEMD logits ``[Q, way]`` of docs/method.md from nodes ``[Q, C, N]``, ``[way, C, M]``."""
    num_nodes = query_nodes.shape[-1]
    # Cross-reference weights on the raw features: a node's dot product with the other
    # image's mean node, relu + 1e-3.
    query_weights = F.relu(torch.einsum("qcn,wc->qwn", query_nodes, support_nodes.mean(2))) + 1e-3
    support_weights = F.relu(torch.einsum("wcm,qc->qwm", support_nodes, query_nodes.mean(2))) + 1e-3
    # 'center': subtract each node's mean over its channels.
    query_nodes = query_nodes - query_nodes.mean(1, keepdim=True)
    support_nodes = support_nodes - support_nodes.mean(1, keepdim=True)
    similarity = F.cosine_similarity(
        query_nodes[:, None, :, :, None], support_nodes[None, :, :, None, :], dim=2, eps=1e-8
    )  # [Q, way, N, M]
    logits = np.zeros(similarity.shape[:2])
    for i in range(similarity.shape[0]):
        for j in range(similarity.shape[1]):
            source = query_weights[i, j].double().numpy()
            target = support_weights[i, j].double().numpy()
            pair = similarity[i, j].double().numpy()
            _, flow = highs_emd(
                1.0 - pair,
                source * len(source) / source.sum(),
                target * len(target) / target.sum(),
            )
            logits[i, j] = np.sum(pair * flow) * temperature / num_nodes
    return logits


def class_structured_episode(generator, way=5, queries_per_class=3, size=84):
    """``(images [way * (1 + queries), 3, size, size], query_labels)``: supports first (image i
    of class i), then queries of class ``j % way``; each class is a smooth random pattern, each
    image that pattern plus noise, roughly normalised (zero mean, unit scale)."""
    coarse = torch.randn((way, 3, 7, 7), generator=generator)
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.cat([torch.arange(way)] * (1 + queries_per_class))
    images = patterns[labels] + 0.5 * torch.randn((len(labels), 3, size, size), generator=generator)
    return images, labels[way:].numpy()
