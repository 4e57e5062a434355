"""tf_deepemd: DeepEMD few-shot classification as TensorFlow/Keras building blocks."""

import glob
import re

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

# TensorFlow's minor version: the compiled EMD kernel is built against the
# TensorFlow of the build environment (pyproject.toml) and must run with the
# same one.
TENSORFLOW = "tensorflow-cpu==2.21.*"


class BuildTensorFlowOps(build_ext):
    """Compiles the EMD kernel with the compile and link flags of the installed
    TensorFlow (its headers, C++17, its C++ ABI flag). The extension is
    optional: without a compiler the package installs and falls back to the
    stock-op solver, with a warning that says so."""

    def build_extensions(self):
        import tensorflow as tf  # the build environment's, pinned like the runtime's

        for extension in self.extensions:
            extension.extra_compile_args = [
                *tf.sysconfig.get_compile_flags(), "-O3", "-g0", "-fopenmp-simd",
                "-Wno-deprecated-declarations", "-Wno-interference-size",
            ]
            extension.extra_link_args = tf.sysconfig.get_link_flags()
        super().build_extensions()


emd_kernel = Extension(
    "tf_deepemd.ops.emd.kernel._emd_ops",
    sources=sorted(glob.glob("tf_deepemd/ops/emd/kernel/*.cc")),
    depends=sorted(glob.glob("tf_deepemd/ops/emd/kernel/*.h")),
    language="c++",
    optional=True,
)

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
    ext_modules=[emd_kernel],
    cmdclass={"build_ext": BuildTensorFlowOps},
    install_requires=[
        # CPU build by default; GPU users install `tensorflow[and-cuda]==2.21.*`
        # instead (see README "Installation").
        TENSORFLOW,
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
