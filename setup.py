"""tf_deepemd: DeepEMD few-shot classification as TensorFlow/Keras building blocks."""

import re

from setuptools import find_packages, setup

setup(
    name="tf_deepemd",
    # Read as text: importing the package would import TensorFlow.
    version=re.search(r'__version__ = "(.+)"', open("tf_deepemd/version.py").read()).group(1),
    description=(
        "Differentiable Earth Mover's Distance (DeepEMD) for few-shot image "
        "classification in TensorFlow/Keras"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tf_deepemd", "tf_deepemd.*"]),
    package_data={"tf_deepemd": ["data/splits/*/*.json", "data/splits/*.json", "py.typed"]},
    install_requires=[
        # CPU build by default; GPU users install `tensorflow[and-cuda]==2.21.*`
        # instead (see README "Installation").
        "tensorflow-cpu==2.21.*",
        "keras>=3.15",
        "numpy",
        "scipy",
        "gin-config>=0.5",
        "tensorflow-datasets>=4.9",
        # TFDS needs it but does not declare it (tensorflow/datasets#11212).
        "importlib_resources",
    ],
    extras_require={
        # matplotlib: the figure tests (tests/visualization) write PNG files;
        # torch: the parity tests against the official PyTorch model
        # (tests/official). Pinned: CPU users install the CPU wheel first
        # (README "Evaluating the official DeepEMD weights").
        "test": ["pytest", "matplotlib", "torch==2.13.0"],
        # PyTorch beside tf_deepemd, e.g. to run the official model next to
        # it; tf_deepemd.load_official_checkpoint itself does not need it.
        "interop": ["torch==2.13.0"],
        # Figures: tools/visualize.py, tf_deepemd.visualization, AccuracyPlot.
        "plots": ["matplotlib"],
        # Peers for benchmarks/emd_solver.py. qpth + torch (the official
        # training solver) are optional too: `pip install qpth torch==2.13.0`.
        "bench": ["POT", "opencv-python-headless", "highspy"],
    },
)
