"""FNAC sound-source localization: the torch-free package (media decoding, the ONNX runtime, post-processing
and the localization pipeline shared by the HTTP service, `fnac score`, the Python API and the client).

    import fnac
    result = fnac.Localizer().localize(video="clip.mp4")        # in this process, the bundled model
    result = fnac.Client("http://127.0.0.1:8000").localize(video="clip.mp4")   # a running service

Importing `fnac` loads nothing heavy: the names below are imported on first use (the Localizer needs the
`serve` extra's ONNX Runtime and PyAV, the clients httpx).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Localizer": "fnac.api",
    "Client": "fnac.client",
    "AsyncClient": "fnac.client",
    "LocalizeError": "fnac.errors",
    "LocalizeResponse": "fnac.schemas",
    "SweepResponse": "fnac.schemas",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fnac' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
