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


def _packages(name: str, folder: str) -> list[str]:
    """The package `name`, kept in `folder`, and its subpackages."""
    return [name, *(f"{name}.{sub}" for sub in find_packages(folder))]


_generate()

setup(
    package_dir={"jukilib": "libs/jukilib", "jukitools": "libs/jukitools", "juki_services": "services",
                 "juki": "gen/juki"},
    packages=(
        _packages("jukilib", "libs/jukilib")
        + _packages("jukitools", "libs/jukitools")
        + _packages("juki_services", "services")
        + _packages("juki", "gen/juki")
    ),
    package_data={"": ["*.toml", "*.pyi", "py.typed", "migrations/*.sql", "data/*.csv",
                       "fonts/*.ttf", "fonts/*.txt"]},
    # data files are named by the patterns above (the migrations and data folders are not packages)
    include_package_data=False,
)
