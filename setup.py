"""Build hook: generate the Python code of `protos/` before setuptools collects packages.

The generated package `juki` (stubs for every contract) is never committed; it is produced here for
`pip install .` / `pip wheel .` and by `make gen` for development, by the same script.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def _generate() -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py")], check=True, cwd=ROOT)


_generate()

setup(
    package_dir={"jukilib": "libs/jukilib", "juki": "gen/juki"},
    packages=(
        find_packages(".", include=["services", "services.*"])
        + ["jukilib." + p if p != "jukilib" else p for p in ["jukilib", *find_packages("libs/jukilib")]]
        + ["juki." + p if p != "juki" else p for p in ["juki", *find_packages("gen/juki")]]
    ),
    package_data={"": ["*.toml", "*.pyi", "py.typed", "migrations/*.sql", "data/*.csv"]},
    # data files are named by the patterns above (the migrations and data folders are not packages)
    include_package_data=False,
)
