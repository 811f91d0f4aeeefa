"""Training losses and regularizers."""

from .triangulation import KERNELS, RegularizerOutput, TriangulationRegularizer, robust_kernel

__all__ = ["KERNELS", "RegularizerOutput", "TriangulationRegularizer", "robust_kernel"]
