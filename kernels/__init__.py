"""Pure array math for latent-engine: linear SVM, PCA, eigh and correlation on numpy, torch or cupy arrays.

No files, no models, no Dask. Each kernel computes in torch on the array's device (CPU or CUDA), has a cupy
path where one pays on a GPU (``impl="auto"|"torch"|"cupy"``), and returns the caller's array type.
"""

from ._validation import ConvergenceWarning, NotFittedError
from .correlation import PearsonState, best_match, cosine_matrix, pearson
from .eigh import eigh
from .pca import PCA
from .svm import LinearSVM

__all__ = [
    "PCA",
    "LinearSVM",
    "ConvergenceWarning",
    "NotFittedError",
    "PearsonState",
    "best_match",
    "cosine_matrix",
    "eigh",
    "pearson",
]
