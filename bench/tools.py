"""Installing what the comparison needs, on a clean Debian machine, by itself.

- nginx, wrk and clamd from Debian's packages (`apt-get install`, as root), when missing;
- Synapse from PyPI into a virtualenv of its own under bench/work/ (git-ignored), never into
  the project's .venv;
- py-spy, only for `--profile`, into another virtualenv there.

Everything is looked for first and installed only when absent, so a second run is quick.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import BENCH_DIR, console

WORK_DIR = BENCH_DIR / "work"  # git-ignored
NGINX = Path("/usr/sbin/nginx")
# Debian packages that provide each program.
APT_PACKAGES = {
    "nginx": NGINX,
    "wrk": Path("/usr/bin/wrk"),
    "clamav-daemon": Path("/usr/sbin/clamd"),
}
# Pinned so that a figure can be traced to the peer that produced it; --synapse-version
# measures another.
SYNAPSE_VERSION = "1.163.2"
PY_SPY_VERSION = "0.4.3"
INSTALL_TIMEOUT = 1800.0  # seconds; a pip or apt-get that hangs longer is stopped


def ensure_apt_packages() -> None:
    """Install nginx, wrk and clamd from Debian's packages when one is missing (needs root)."""
    missing = [name for name, path in APT_PACKAGES.items() if not path.exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(
            f"missing {', '.join(missing)}: run as root, or `apt-get install {' '.join(missing)}`"
        )
    console.print(f"installing {', '.join(missing)} from Debian's packages")
    # Debian starts nginx's own service on installation when the machine lets it (no
    # policy-rc.d): that instance is the system's, and the benchmark neither uses nor stops it.
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    still = [name for name, path in APT_PACKAGES.items() if not path.exists()]
    if still:
        raise SystemExit(f"apt-get did not install {', '.join(still)}")


def ensure_venv(name: str, requirement: str, module: str) -> Path:
    """A virtualenv bench/work/<name> holding `requirement` (pip syntax); returns its python.
    `module` is imported to check that an existing one is complete."""
    venv = WORK_DIR / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and marker.read_text() == requirement:
        return python
    console.print(f"installing {requirement} into {venv} (from PyPI)")
    if venv.exists():
        shutil.rmtree(venv)
    WORK_DIR.mkdir(exist_ok=True)
    # The interpreter the project's venv was made from, not the venv itself.
    base = Path(sys.base_prefix) / "bin" / "python3"
    _run([str(base if base.exists() else "python3"), "-m", "venv", str(venv)])
    _run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    _run([str(python), "-m", "pip", "install", "--quiet", requirement])
    _run([str(python), "-c", f"import {module}"])
    marker.write_text(requirement)
    return python


def ensure_synapse(version: str = SYNAPSE_VERSION) -> Path:
    """The python of a virtualenv with matrix-synapse `version` in it."""
    return ensure_venv(f"synapse-{version}", f"matrix-synapse=={version}", "synapse.app")


def ensure_py_spy() -> Path:
    """The py-spy executable (installed from PyPI into bench/work/profilers)."""
    python = ensure_venv("profilers", f"py-spy=={PY_SPY_VERSION}", "os")
    return python.parent / "py-spy"


def tool_versions(synapse_python: Path | None) -> dict[str, str]:
    """The versions of the peers and the client tools, for the results."""
    versions = {
        "nginx": _first_line([str(NGINX), "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "curl": _first_line(["curl", "--version"]),
        "clamd": _first_line([str(APT_PACKAGES["clamav-daemon"]), "--version"]),
    }
    if synapse_python is not None:
        versions["synapse"] = _first_line(
            [
                str(synapse_python),
                "-c",
                "import importlib.metadata as m; print(m.version('matrix-synapse'))",
            ]
        )
    return versions


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else ""


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{output}")
