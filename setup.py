"""latent-engine: GPU-accelerated, streaming, resumable latent-space analysis of generative models."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = next(line.split('"')[1] for line in (ROOT / "engine" / "_version.py").read_text().splitlines()
               if line.startswith("__version__"))

setup(
    name="latent-engine",
    version=version,
    description="Streaming, resumable InterFaceGAN / SeFa / GANSpace analysis of generator latent spaces",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["engine", "engine.*", "kernels", "kernels.*"]),
    package_data={"engine.models": ["weights/*.pt", "weights/*.json"],
                  "engine.explore": ["static/*.html", "static/*.js", "static/*.css"]},
    install_requires=[
        # Install the CPU wheel first (pip install torch==2.13.0) on machines without a GPU: an unpinned
        # torch may pull a multi-GB CUDA build.
        "torch>=2.2",
        "numpy>=1.26",
        "zarr>=3.1.3",  # LocalStore writes each file atomically (temp + rename) from 3.1.3 on; the store relies on it
        "fsspec>=2024.2",
        "dask[array]>=2024.1",
        "distributed>=2024.1",
        "click>=8.1",
        "tqdm>=4.66",
        "pyyaml>=6.0",
        "matplotlib>=3.8",
        "pillow>=10.0",
        "psutil>=5.9",
        # faiss-cpu by default; on a GPU machine swap it for a faiss GPU wheel (see README): the two
        # install into the same folder and break each other, so they are never both listed.
        "faiss-cpu>=1.8",
        "flask>=3.0",      # latent-engine explore: the web page's application
        "waitress>=3.0",   # ... and its server (threaded, pure Python)
    ],
    extras_require={
        "test": ["pytest>=8.0", "scikit-learn>=1.4", "xarray>=2024.1", "scipy>=1.11",
                 "playwright>=1.40",   # drives the system's Chromium in tests/test_explore_browser.py
                 "dask-jobqueue>=0.8"],  # renders SLURM/PBS job scripts in tests/test_cluster.py
        "gpu": ["cupy-cuda13x>=13.6", "dask-cuda>=24.2"],
        # SLURM/PBS clusters from a cluster file (--cluster FILE, kind slurm | pbs)
        "cluster": ["dask-jobqueue>=0.8"],
    },
    entry_points={"console_scripts": ["latent-engine=engine.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
