"""Progress of evaluation loops: exact counts per call, a rate and the time left."""

import io
import logging

import numpy as np
import pytest
import tensorflow as tf

from tf_deepemd import progress
from tf_deepemd.training import evaluate
from tf_deepemd.progress import Progress, format_seconds


class Clock:
    """A `time.perf_counter` that moves only when told."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", fake)
    return fake


def test_log_lines_give_count_rate_and_time_left(clock, caplog):
    caplog.set_level(logging.INFO, logger=progress.__name__)
    display = Progress(300, "test", interactive=False)
    for done in range(12, 301, 12):  # a call of 12 episodes every 0.8 s: 15 episodes/s
        clock.now += 0.8
        display.update(done, **{"accuracy (%)": 80.0})
    lines = [record.getMessage() for record in caplog.records]
    # A line once 5 s have passed and a tenth more is done; none at the end (the caller's summary).
    assert lines[0] == "test: 84/300 episodes, 15.00 episodes/s, 14 s left, accuracy (%) 80.00"
    assert len(lines) == 3 and all(" left" in line for line in lines)
    assert [int(line.split()[1].split("/")[0]) for line in lines] == [84, 168, 252]


def test_a_short_loop_logs_nothing(clock, caplog):
    caplog.set_level(logging.INFO, logger=progress.__name__)
    display = Progress(24, "pretrain: validation", interactive=False)
    for done in (12, 24):
        clock.now += 0.8
        display.update(done)
    assert caplog.records == []


def test_a_resumed_loop_counts_its_rate_from_where_it_started(clock, caplog):
    caplog.set_level(logging.INFO, logger=progress.__name__)
    display = Progress(1000, "test", interactive=False, start=500)
    clock.now += 10.0
    display.update(600)
    assert caplog.records[0].getMessage() == "test: 600/1000 episodes, 10.00 episodes/s, 40 s left"


def test_on_a_terminal_a_keras_bar_with_time_left(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    display = Progress(300, "test", interactive=True)
    display.update(12, **{"accuracy (%)": 80.0})
    display.update(24, **{"accuracy (%)": 81.0})
    assert "24/300" in out.getvalue() and "/episode" in out.getvalue() and "accuracy (%): 81.0000" in out.getvalue()


def test_format_seconds():
    assert [format_seconds(s) for s in (4.4, 59.6, 185, 3723)] == ["4 s", "1:00", "3:05", "1:02:03"]


def test_the_evaluator_reports_every_call_with_its_exact_count(monkeypatch):
    updates = []

    class Recorder:
        def __init__(self, total, description):
            updates.append(("total", total, description))

        def update(self, done, **values):
            updates.append((done, round(values["accuracy (%)"], 6)))

    monkeypatch.setattr(evaluate, "Progress", Recorder)
    labels = tf.constant([0, 1])
    episodes = tf.data.Dataset.from_tensor_slices(
        ((tf.zeros([7, 2, 4, 4, 3]), tf.tile(labels[None], [7, 1]), tf.zeros([7, 2, 4, 4, 3])),
         tf.constant([[0, 1], [0, 0], [1, 1], [0, 1], [0, 1], [1, 0], [0, 1]])))

    def predicts_0_then_1(inputs, training=False):
        """Logits ``[E, 2, 2]`` of a batch of episodes: query 0 is class 0, query 1 class 1."""
        return tf.zeros_like(inputs[2][:, :, 0, 0, :1]) + tf.constant([[1.0, 0.0], [0.0, 1.0]])

    result = evaluate.EpisodeEvaluator(predicts_0_then_1, episodes_per_call=3)(episodes, progress="validation")

    per_episode = [100.0, 50.0, 50.0, 100.0, 100.0, 0.0, 100.0]
    np.testing.assert_allclose(result.per_episode, per_episode)
    assert updates == [("total", 7, "validation"), (3, round(np.mean(per_episode[:3]), 6)),
                       (6, round(np.mean(per_episode[:6]), 6)), (7, round(np.mean(per_episode), 6))]


def test_units_with_their_own_plural(clock, caplog):
    caplog.set_level(logging.INFO, logger=progress.__name__)
    display = Progress(100, "retrieval", unit="query", units="queries", interactive=False)
    clock.now += 10.0
    display.update(20)
    assert caplog.records[0].getMessage() == "retrieval: 20/100 queries, 2.00 queries/s, 40 s left"
