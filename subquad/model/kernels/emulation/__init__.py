"""TEST-ONLY host emulation of the cupy backend; nothing here is GPU evidence (docs/GPU.md).

- ``host``: the CUDA C sources of ``cuda_source`` compiled by the system C/C++ compiler with a
  small prelude, launched grid x block serially (forward, reverse or seeded random order),
  in process (ctypes) or in a sanitizer-built driver executable (AddressSanitizer + UBSan).
- ``rawkernel``: a ``cupy.RawModule``/``RawKernel`` double that parses each kernel's C signature
  and applies CuPy's argument marshalling, failing (kernel and parameter named) where CuPy would
  silently pass the wrong bytes.
- ``fake_cupy``: the subset of ``cupy``/``cupyx`` that the model uses, on numpy and scipy;
  :func:`install` puts it in ``sys.modules``. ``SUBQUAD_EMULATE_CUPY=1`` installs it from
  ``subquad.model.backend`` (for CLI runs under test); results then record the backend as
  ``cupy-emulated`` and no GPU in the environment.
"""
