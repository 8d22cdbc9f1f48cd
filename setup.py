"""Build steps pyproject.toml cannot express: the cffi shim and the static exec trampoline."""

import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
TRAMPOLINE_SRC = HERE / "csrc" / "trampoline.c"


class BuildWithTrampoline(build_ext):  # type: ignore[misc]
    """Also compile csrc/trampoline.c into minirun/libexec/ (static: it runs after pivot_root)."""

    def run(self) -> None:
        super().run()
        dest_root = HERE if self.inplace or self.editable_mode else Path(self.build_lib)
        for root in {HERE, dest_root}:
            out = root / "minirun" / "libexec" / "minirun-exec"
            out.parent.mkdir(parents=True, exist_ok=True)
            cc = os.environ.get("CC", "cc")
            subprocess.run(
                [cc, "-static", "-Os", "-Wall", "-Wextra", "-o", str(out), str(TRAMPOLINE_SRC)], check=True
            )


setup(
    cffi_modules=["csrc/build_shim.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithTrampoline},
    package_data={"minirun": ["libexec/minirun-exec"]},
)
