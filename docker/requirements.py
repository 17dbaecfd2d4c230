"""Print the pip requirements of the project's core dependencies plus the given extras, from pyproject.toml.

    python docker/requirements.py pyproject.toml serve                  # one requirement per line
    python docker/requirements.py pyproject.toml serve --cuda-major 12 --cuda-wheels

--cuda-major pins onnxruntime-gpu to the releases built for that CUDA major version (13: 1.27 and later, which
need an NVIDIA driver of the 580 series or newer; 12: 1.20-1.26, driver 525 or newer); --cuda-wheels adds its
`cuda,cudnn` extras, which pull the CUDA runtime, cuBLAS and cuDNN of that version from PyPI.

The Dockerfiles install these before the project itself, so the dependency layers stay cached while the code
changes. Self-references such as `fnac[serve]` inside an extra are expanded in place.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    self_reference = re.compile(rf"{re.escape(project['name'])}\[([^\]]+)\]")
    result = list(project.get("dependencies", []))
    pending, done = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in done:
            continue
        if extra not in optional:
            raise SystemExit(f"{pyproject}: no extra {extra!r} (have {sorted(optional)})")
        done.add(extra)
        for requirement in optional[extra]:
            if match := self_reference.fullmatch(requirement.replace(" ", "")):
                pending.extend(name.strip() for name in match.group(1).split(","))
            elif requirement not in result:
                result.append(requirement)
    return result


# onnxruntime-gpu releases per CUDA major version (PyPI wheels), and the oldest driver branch each needs.
ORT_FOR_CUDA = {12: ">=1.20,<1.27", 13: ">=1.27"}
DRIVER_FOR_CUDA = {12: 525, 13: 580}


def pin_onnxruntime(lines: list[str], cuda_major: int, cuda_wheels: bool) -> list[str]:
    """Replace the onnxruntime-gpu requirement by the releases built for `cuda_major` (plus extras)."""
    if cuda_major not in ORT_FOR_CUDA:
        raise SystemExit(f"CUDA major version {cuda_major} is not supported (choose {sorted(ORT_FOR_CUDA)})")
    name = "onnxruntime-gpu[cuda,cudnn]" if cuda_wheels else "onnxruntime-gpu"
    pinned = [
        f"{name}{ORT_FOR_CUDA[cuda_major]}" if re.match(r"onnxruntime-gpu\b", line) else line
        for line in lines
    ]
    if pinned == lines:
        raise SystemExit("no onnxruntime-gpu requirement to pin in these extras")
    return pinned


if __name__ == "__main__":
    args = sys.argv[1:]
    cuda_wheels = "--cuda-wheels" in args
    args = [a for a in args if a != "--cuda-wheels"]
    cuda_major = None
    if "--cuda-major" in args:
        i = args.index("--cuda-major")
        cuda_major = int(args[i + 1])
        del args[i : i + 2]
    if len(args) < 2:
        raise SystemExit(__doc__)
    lines = requirements(Path(args[0]), args[1:])
    if cuda_major is not None:
        lines = pin_onnxruntime(lines, cuda_major, cuda_wheels)
    print("\n".join(lines))
