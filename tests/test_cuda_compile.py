"""Every CUDA source compiles with NVRTC for each dtype and architecture (no GPU needed).

NVRTC ships as a pip wheel (the ``dev`` extra installs ``cuda-bindings`` and
``nvidia-cuda-nvrtc``), so a kernel edited on a CPU-only machine fails here, with NVRTC's log,
instead of on a borrowed GPU. Warnings fail too: the sources compile cleanly today.
"""

from __future__ import annotations

import platform

import pytest

from subquad.model.kernels.cuda_source import (
    ARCHITECTURES,
    CTYPES,
    SOURCES,
    compile_check,
    render,
)

if platform.system() == "Darwin":  # NVIDIA publishes no NVRTC wheels for macOS
    pytest.skip("NVRTC wheels do not exist for macOS", allow_module_level=True)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("dtype", sorted(CTYPES))
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_source_compiles(name: str, dtype: str, arch: str) -> None:
    ok, log = compile_check(name, dtype, arch)
    assert ok, f"NVRTC failed to compile {name} ({dtype}, {arch}):\n{log}"
    assert "warning" not in log.lower(), f"NVRTC warnings for {name} ({dtype}, {arch}):\n{log}"


def test_a_syntax_error_is_reported_with_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a missing semicolon is caught, and the log names the line."""
    broken = SOURCES["sparse"].replace("T acc = 0;", "T acc = 0", 1)
    monkeypatch.setitem(SOURCES, "sparse", broken)
    line = render("sparse", "float32").splitlines().index("    T acc = 0") + 1
    ok, log = compile_check("sparse", "float32", "compute_90")
    assert not ok
    assert "error" in log and f"({line + 1})" in log


def test_unknown_dtype_is_a_clear_error() -> None:
    from subquad.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="float32"):
        render("sparse", "float16")
