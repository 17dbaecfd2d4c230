"""Print the pip requirements of the project's core dependencies plus the given extras, from pyproject.toml.

    python docker/requirements.py pyproject.toml serve      # one requirement per line

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


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
