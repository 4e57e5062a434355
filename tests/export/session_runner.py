"""Runs SavedModel signatures with the TF1 session loader TF Serving uses (run as a script).

    python session_runner.py EXPORT_DIR JOBS_JSON

``JOBS_JSON`` lists ``{"signature", "inputs": a .npz, "outputs": a .npz}``;
each job's fetched outputs are saved to its ``outputs`` file, or, if the
run fails, ``{"error": type, "message": ...}`` is printed as one JSON line.
The model is loaded once. It imports only TensorFlow and NumPy: nothing of
tf_deepemd has to be importable, as on a serving host.
"""

import json
import sys

import numpy as np
import tensorflow as tf


def main(export_dir, jobs_file):
    with open(jobs_file) as stream:
        jobs = json.load(stream)
    tf1 = tf.compat.v1
    with tf1.Session(graph=tf.Graph()) as session:
        meta_graph = tf1.saved_model.loader.load(session, ["serve"], export_dir)
        for job in jobs:
            signature = meta_graph.signature_def[job["signature"]]
            with np.load(job["inputs"]) as inputs:
                feed = {signature.inputs[name].name: inputs[name] for name in inputs.files}
            fetch = {name: info.name for name, info in signature.outputs.items()}
            try:
                outputs = session.run(fetch, feed)
            except tf.errors.OpError as error:
                print(json.dumps({"error": type(error).__name__, "message": error.message}))
                continue
            np.savez(job["outputs"], **outputs)
            print(json.dumps({"ok": job["outputs"]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
