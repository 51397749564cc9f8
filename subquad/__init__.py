"""subquad: an empirical complexity verification suite for subquadratic training of wide networks.

Numba's OpenMP runtime and the BLAS threads both spin-wait by default; on a 2-core machine the
hand-off between them costs milliseconds per switch (see docs: CPU_KERNELS.md). A passive wait
policy, set before either runtime loads, removes most of that penalty.
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("KMP_BLOCKTIME", "0")

__version__ = "0.1.0"
