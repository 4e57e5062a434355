"""A malformed request is answered with InvalidArgumentError naming the problem, not a crash.

Run through the exported signatures (the same graph the session loader
runs; `test_served_outputs` and `test_grpc_predict` show the message
reaching a session-loader client and a gRPC client).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.export.conftest import episode_request


def call(signature, **inputs):
    return signature(**{name: tf.constant(value) for name, value in inputs.items()})


@pytest.fixture
def good(rng):
    return episode_request(rng, way=3, shot=1, queries=2)


def test_a_good_request_passes_the_checks(loaded_signatures, good):
    outputs = call(loaded_signatures["serving_default"], **good)
    assert outputs["logits"].shape == (2, 3)


def images(count, height=8, width=8, channels=3):
    return np.zeros((count, height, width, channels), np.uint8)


BAD_EPISODES = {
    "support_images of rank 3": (
        dict(support_images=images(3)[0]), "`support_images` must have rank 4 ([S, H, W, 3])"),
    "query_images of rank 5": (
        dict(query_images=images(2)[None]), "`query_images` must have rank 4 ([Q, H, W, 3])"),
    "grey support images": (
        dict(support_images=images(3, channels=1)), "`support_images` must have 3 channels"),
    "empty images": (
        dict(query_images=images(2, height=0)), "`query_images`: images must be at least 1x1"),
    "labels of rank 2": (
        dict(support_labels=np.zeros((3, 1), np.int32)), "`support_labels` must have rank 1 ([S])"),
    "more labels than support images": (
        dict(support_labels=np.array([0, 1, 2, 0], np.int32)),
        "`support_labels` must have one label per support image"),
    "fewer labels than support images": (
        dict(support_labels=np.array([0, 1], np.int32)),
        "`support_labels` must have one label per support image"),
    "a negative label": (
        dict(support_labels=np.array([0, -1, 1], np.int32)), "`support_labels` must be >= 0"),
    "a label out of range": (
        dict(support_labels=np.array([0, 1, 7], np.int32)),
        "`support_labels` must be < the number of support images"),
    "a class with no support image": (
        dict(support_labels=np.array([0, 2, 2], np.int32)),
        "every class 0 .. way-1 (way = max label + 1) needs at least one support image"),
    "an empty support set": (
        dict(support_images=images(0), support_labels=np.zeros([0], np.int32)),
        "Empty support set"),
    "no query image": (dict(query_images=images(0)), "`query_images` has no image"),
}


@pytest.mark.parametrize("case", sorted(BAD_EPISODES))
def test_bad_episode_request_names_the_problem(loaded_signatures, good, case):
    change, message = BAD_EPISODES[case]
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        call(loaded_signatures["serving_default"], **{**good, **change})
    assert message in raised.value.message


def test_bad_embed_request_names_the_problem(loaded_signatures):
    with pytest.raises(tf.errors.InvalidArgumentError, match="`images` must have rank 4"):
        call(loaded_signatures["embed"], images=images(1)[0])


BAD_EMD = {
    "cost of rank 2": (dict(cost=np.ones((3, 4), np.float32)), "`cost` must have rank 3"),
    "source weights not [B, N]": (
        dict(source_weights=np.ones((2, 5), np.float32)), "`source_weights` must be [B, N]"),
    "target weights not [B, M]": (
        dict(target_weights=np.ones((2, 3), np.float32)), "`target_weights` must be [B, M]"),
    "negative weights": (
        dict(source_weights=-np.ones((2, 3), np.float32)), "non-negative"),
}


@pytest.mark.parametrize("case", sorted(BAD_EMD))
def test_bad_emd_request_names_the_problem(loaded_signatures, case):
    good = dict(
        cost=np.ones((2, 3, 4), np.float32),
        source_weights=np.ones((2, 3), np.float32),
        target_weights=np.ones((2, 4), np.float32),
    )
    change, message = BAD_EMD[case]
    assert call(loaded_signatures["emd"], **good)["flow"].shape == (2, 3, 4)
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        call(loaded_signatures["emd"], **{**good, **change})
    assert message in raised.value.message
