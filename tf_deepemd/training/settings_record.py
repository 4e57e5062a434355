"""The settings a run folder was made with: a resumed run must use the same ones.

Rerunning the training command resumes its run folder; rerunning it with
other settings would continue the checkpoints of one configuration under
another (or fail deep inside a checkpoint restore). The first run writes
``<model_dir>/settings.json``: every gin binding (``pretrain.epochs``,
``make_model.head``, ``make_optimizer.momentum``, ...) and the effective
arguments of `run_experiment`; a later training run in the same folder
must match it, else it is refused with the settings that differ named.

Not compared: where the folder is (``model_dir``), what only changes the
output (``verbose``, ``results_file``), which stages this invocation runs
(``stages``: adding the test to a trained run is fine), and the callbacks.
"""

from __future__ import annotations

import os
import re

import gin

from tf_deepemd.run_folder import read_json, write_json_atomically

SETTINGS_FILE = "settings.json"
NOT_COMPARED = ("model_dir", "verbose", "results_file", "stages", "callbacks", "stage_callbacks")

_BINDING = re.compile(r"^([\w./%-]+)\s*=\s*(.*)$")


def gin_bindings(config_text):
    """``{'scope/configurable.parameter': 'value as written'}`` of a gin config string.

    Values gin prints over several lines are joined with single spaces.
    """
    bindings, name = {}, None
    for line in config_text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or line.startswith(("import ", "from ")):
            continue
        match = _BINDING.match(line)
        if match and not line[0].isspace():
            name = match.group(1)
            bindings[name] = match.group(2).strip()
        elif name is not None:
            bindings[name] += " " + line.strip()
    return bindings


def current_settings(arguments):
    """The settings to record and compare, ``{name: value text}``.

    Args:
      arguments: `run_experiment`'s effective arguments (bound, passed or
        default), by name.
    """
    settings = {name: value for name, value in gin_bindings(gin.config_str()).items()
                if not name.rpartition("/")[2].startswith("run_experiment.")}
    settings.update({f"run_experiment.{name}": repr(value) for name, value in arguments.items()
                     if name not in NOT_COMPARED})
    return settings


def check_or_record(model_dir, settings):
    """Refuses ``settings`` that differ from those recorded in ``model_dir``; records them if none are.

    Raises:
      ValueError: naming each differing setting with both values.
    """
    path = os.path.join(model_dir, SETTINGS_FILE)
    if not os.path.isfile(path):
        write_json_atomically(path, settings)
        return
    recorded = read_json(path)
    differences = [
        f"{name} = {settings.get(name, '(not set)')} now, {recorded.get(name, '(not set)')} there"
        for name in sorted(set(settings) | set(recorded)) if settings.get(name) != recorded.get(name)
    ]
    if differences:
        raise ValueError(
            f"{model_dir} holds a run made with other settings ({path}): " + "; ".join(differences)
            + ". Rerun with the same settings to resume it, or use another model_dir."
        )
