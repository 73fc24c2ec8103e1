"""pip install --no-build-isolation . builds a wheel with libpskv inside;
it installs into a fresh virtual environment and works there, with no
PSKV_LIBRARY and no build tree in sight."""
import importlib.util
import os
import subprocess
import sys

import pytest

SRC = os.environ.get("PSKV_SOURCE_ROOT")


@pytest.mark.skipif(importlib.util.find_spec("mesonpy") is None or
                    importlib.util.find_spec("pip") is None,
                    reason="needs pip and meson-python (python3-pip, python3-mesonpy)")
def test_wheel_installs_and_imports(tmp_path):
    assert SRC, "PSKV_SOURCE_ROOT names the source tree"
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                    "--no-index", "-q", "-w", str(wheels), SRC], check=True)
    (wheel,) = wheels.glob("pskv-*.whl")
    venv = tmp_path / "venv"
    # --system-site-packages: numpy (and torch) come from the system, as
    # they would for a Debian user; pip too (--without-pip needs no ensurepip).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PSKV_LIBRARY", "PYTHONPATH")}
    code = ("import importlib.util, pskv, numpy as np\n"
            "if importlib.util.find_spec('torch'):\n"
            "    import pskv.torch\n"
            "assert pskv.library_path.startswith(%r), pskv.library_path\n"
            "with pskv.open() as s:\n"
            "    t = s.table('t', 'dim=4 optimizer=sgd lr=1')\n"
            "    t.push([1], np.ones((1, 4), np.float32))\n"
            "    assert (t.pull([1]) == -1).all()\n"
            "print(pskv.__version__)\n") % str(venv)
    out = subprocess.run([py, "-c", code], cwd=str(tmp_path), env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == subprocess.run(
        [sys.executable, "-c", "import pskv; print(pskv.__version__)"],
        capture_output=True, text=True, check=True).stdout.strip()
