"""Packaging for tinyvision.

    pip install -e ".[dev]"        # the engine, the tests and what the lessons plot with
    pip install -e ".[dev,gpu]"    # the same, plus CuPy for an NVIDIA GPU (CUDA 12)
    pip install -e ".[dev,gpu-cuda13]"   # ... or CuPy for CUDA 13

`import tinyvision` needs NumPy alone; everything else is imported lazily and, when
missing, the error names the extra that installs it.

The CUDA C kernel (csrc/flash_attention.cu): when nvcc is on PATH, installing compiles it for sm_80
and sm_90 (+ PTX) into tinyvision/kernels/_bin/, which ships in the package; without nvcc, or if nvcc
fails, the install still succeeds and _bin/BUILD.json records why, and the loader compiles the
source with NVRTC on first use (tinyvision/kernels/attention_cuda_c.py).
"""
import importlib.util
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class build_py_with_kernel(build_py):
    """build_py, plus csrc/build.py's build(): the fatbin and the kernel source into kernels/_bin."""

    def run(self):
        super().run()
        spec = importlib.util.spec_from_file_location("csrc_build", HERE / "csrc" / "build.py")
        csrc_build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(csrc_build)
        # an editable install imports the package from the source tree, a normal one from build_lib
        root = HERE if getattr(self, "editable_mode", False) else Path(self.build_lib)
        info = csrc_build.build(root / "tinyvision" / "kernels" / "_bin")
        print("tinyvision: CUDA kernel", "built" if info["binary"] else info["reason"])

EXTRAS = {
    # Tests and lessons: pytest + hypothesis for the property tests, matplotlib for the
    # figures, tqdm for progress bars, scikit-learn for its bundled 8x8 digits.
    "dev": [
        "pytest>=7",
        "hypothesis>=6.80",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "scikit-learn>=1.3",
        # the notebook tools below, so that the test suite can open a lesson as a notebook and run it
        "jupytext>=1.16",
        "ipykernel>=6",
        "nbclient>=0.10",
    ],
    # Lessons as notebooks: jupytext opens lessons/*.py (their `# %%` cells) in Jupyter, ipykernel runs
    # them; `dev` includes these too. Open one with: jupytext --to notebook lessons/03_vit.py
    "notebook": ["jupytext>=1.16", "ipykernel>=6", "nbclient>=0.10"],
    # CuPy for the machine's CUDA: "gpu" for CUDA 12 drivers, "gpu-cuda13" for CUDA 13. Both wheels
    # install the same `cupy` module, which is all the GPU backend imports (only when asked for
    # "cuda"); with a CuPy already installed, neither extra is needed.
    "gpu": ["cupy-cuda12x>=13"],
    "gpu-cuda13": ["cupy-cuda13x>=14"],
}

setup(
    name="tinyvision",
    version="0.1.0",
    description="A from-scratch teaching framework for vision models: NumPy autograd up to ViT, CLIP and diffusion",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tinyvision", "tinyvision.*"]),
    package_data={"tinyvision.kernels": ["_bin/*"]},
    cmdclass={"build_py": build_py_with_kernel},
    # threadpoolctl reads and sets the BLAS's thread count, which the default thread rule needs
    # (tinyvision/kernels/_threads.py); it is imported lazily, and without it that rule is skipped
    install_requires=["numpy>=1.24", "numba>=0.58", "threadpoolctl>=3.1"],
    extras_require=EXTRAS,
    license="MIT",
)
