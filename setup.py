"""Packaging for tinyvision.

    pip install -e ".[dev]"        # the engine, the tests and what the lessons plot with
    pip install -e ".[dev,gpu]"    # the same, plus CuPy for an NVIDIA GPU (CUDA 12)

`import tinyvision` needs NumPy alone; everything else is imported lazily and, when
missing, the error names the extra that installs it.
"""
from setuptools import find_packages, setup

EXTRAS = {
    # Tests and lessons: pytest + hypothesis for the property tests, matplotlib for the
    # figures, tqdm for progress bars, scikit-learn for its bundled 8x8 digits.
    "dev": [
        "pytest>=7",
        "hypothesis>=6.80",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "scikit-learn>=1.3",
    ],
    # CuPy built against CUDA 12.x; the GPU backend imports it only when asked for "cuda".
    "gpu": ["cupy-cuda12x>=13"],
}

setup(
    name="tinyvision",
    version="0.1.0",
    description="A from-scratch teaching framework for vision models: NumPy autograd up to ViT, CLIP and diffusion",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tinyvision", "tinyvision.*"]),
    install_requires=["numpy>=1.24", "numba>=0.58"],
    extras_require=EXTRAS,
    license="MIT",
)
