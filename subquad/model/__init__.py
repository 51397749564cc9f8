"""The model layer: network, sparsifier, kernels, sketches, solvers and trainers.

The mathematics of the specification (docs/ALGORITHM.md) lives here and nowhere else.
"""
