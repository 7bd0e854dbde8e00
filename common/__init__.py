"""What every package needs, defined once: errors for bad input (``errors``), outputs written
under a temporary name (``fsutil``), the strict YAML reader (``yamlio``), numba's ``njit`` with a
cache that works on a read-only install (``jit``), and the shared vocabulary (``vocab``).

It imports none of sparsesim's other packages (``tests/test_layers.py`` holds it to that).
"""
