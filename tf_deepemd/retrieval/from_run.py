"""Retrieval evaluation of a gin-configured training run (``tools/retrieve.py``).

The run's model is rebuilt and its weights loaded exactly as
``tools/eval.py`` / ``tools/export.py`` do
(`tf_deepemd.training.run_settings.restore_run_model`: the gin-bound
`make_model`, the best weights of the latest finished stage of
``model_dir``); the gallery is ``retrieval.split`` of the run's dataset
(``run_experiment.dataset``, ``data_dir``, ``dataset_options``), at the
run's image size. gin must be parsed before calling `retrieve_run`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Optional

import tensorflow as tf

from tf_deepemd.layers.deepemd_head import DeepEMDHead
from tf_deepemd.models.naming import method_name
from tf_deepemd.retrieval import galleries
from tf_deepemd.retrieval.evaluate import RetrievalSettings, evaluate_leave_one_out
from tf_deepemd.retrieval.index import load_index
from tf_deepemd.run_folder import write_json_atomically
from tf_deepemd.training.launch import configuration_checks
from tf_deepemd.training.run_settings import restore_run_model, run_settings

log = logging.getLogger(__name__)


def _weights_info(weights):
    if weights is None:
        return {"weights": None, "weights_mtime": None}
    return {"weights": os.path.abspath(weights), "weights_mtime": os.path.getmtime(weights)}


def default_output(model_dir: Optional[str], dataset: str, split: str) -> str:
    """``<model_dir>/retrieval_<dataset>_<split>.json``."""
    if not model_dir:
        raise ValueError("No model_dir to write the results to: pass --model_dir or --output.")
    return os.path.join(model_dir, f"retrieval_{dataset}_{split}.json")


def solver_settings(model):
    """The EMD solver settings of the model's DeepEMD head (defaults for other heads)."""
    head = getattr(model, "head", None)
    if isinstance(head, DeepEMDHead):
        return {"solver_tolerance": head.tolerance, "solver_max_iterations": head.max_iterations}
    return {"solver_tolerance": None, "solver_max_iterations": 100}


def saved_index(index_file, expected):
    """The gallery index saved in ``index_file``, or None; ValueError if made with other settings."""
    if not index_file or not os.path.isfile(index_file):
        return None
    index = load_index(index_file)
    stale = {key: (index.metadata.get(key), value) for key, value in expected.items()
             if index.metadata.get(key) != value}
    if stale:
        raise ValueError(
            f"`index_file` {index_file!r} was made with other settings ({stale}, as (file, now)); "
            "delete it or pass another --index_file."
        )
    log.info("retrieval: loaded the gallery index %s (%d images)", index_file, index.size)
    return index


def retrieve_run(
    model_dir: Optional[str] = None,
    *,
    weights: Optional[str] = None,
    index_file: Optional[str] = None,
    output: Optional[str] = None,
    settings: Optional[RetrievalSettings] = None,
) -> tuple[dict, str]:
    """Indexes the run's gallery split and evaluates retrieval leave-one-out.

    Args:
      model_dir: the run's folder (default ``run_experiment.model_dir``).
      weights: evaluate this ``.weights.h5`` instead of the run's best.
      index_file: ``.npz`` gallery index: loaded if it exists (and was made
        with the same weights, dataset, split and image size), else built
        and saved there.
      output: results JSON (default ``<model_dir>/retrieval_<dataset>_<split>.json``).
      settings: `RetrievalSettings` (default: from gin, ``retrieval.*``).

    Returns:
      ``(results dict, output path)``.

    Raises:
      ValueError: configuration problems, naming the setting.
    """
    with configuration_checks():
        settings = settings or RetrievalSettings()
        settings.check()
        run = run_settings(model_dir)
        if not run.dataset:
            raise ValueError("No dataset: bind run_experiment.dataset (the run's gin files do).")
        output = output or default_output(run.model_dir, run.dataset, settings.split)
        if index_file is not None and not os.fspath(index_file).endswith(".npz"):
            raise ValueError(f"`index_file` must end with .npz, got {index_file!r}.")
        if settings.split in galleries.DML_SPLITS and run.dataset == "cub":
            overlap = galleries.dml_overlap(settings.split)
            if overlap:
                log.warning(
                    "The few-shot CUB train split shares %d classes with %s: a model trained on it has "
                    "seen them. The DML protocol needs a model trained on classes 1-100 only.",
                    overlap, settings.split,
                )
        split = galleries.load_gallery_split(run.dataset, settings.split, run.data_dir, run.dataset_options)
        model, weights = restore_run_model(run, weights)
        expected = dict(
            dataset=split.dataset, split=split.split, image_size=[run.image_size] * 2, **_weights_info(weights)
        )
        index = saved_index(index_file, expected)

    embed = {}
    if index is None:
        tick = time.perf_counter()
        index = galleries.index_split(
            model.encoder, split, run.image_size, settings.embed_batch_size, metadata=expected
        )
        seconds = time.perf_counter() - tick
        embed = {"embed_seconds": round(seconds, 3), "embed_images_per_second": round(index.size / seconds, 1)}
        log.info("retrieval: embedded %d gallery images in %.1f s", index.size, seconds)
        if index_file:
            index.save(index_file)
            log.info("retrieval: saved the gallery index to %s", index_file)

    solver = solver_settings(model)
    if settings.solver_tolerance is not None:
        solver["solver_tolerance"] = float(settings.solver_tolerance)
    results = evaluate_leave_one_out(
        index,
        methods=settings.methods,
        shortlist_size=settings.shortlist_size,
        ks=settings.recall_ks,
        query_batch_size=settings.query_batch_size,
        max_queries=settings.max_queries,
        query_seed=settings.query_seed,
        progress="retrieval",
        **solver,
    )
    results.update(
        dataset=run.dataset,
        split=settings.split,
        model_dir=run.model_dir,
        weights=expected["weights"],
        trained=weights is not None,
        model=method_name(model),
        backbone=type(model.backbone).__name__,
        image_size=run.image_size,
        num_nodes=index.num_nodes,
        solver=solver,
        settings=dataclasses.asdict(settings),
        tensorflow=tf.__version__,
        **embed,
    )
    results["settings"]["methods"] = list(settings.methods)
    results["settings"]["recall_ks"] = list(settings.recall_ks)
    write_json_atomically(output, results)
    return results, output
