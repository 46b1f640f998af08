"""`pip install .` ships everything: the generated stubs (typed), migrations, data files, the catalogue;
built with the locked build tools (no isolated build environment resolved afresh), without warnings."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_generated_stubs_migrations_and_data(tmp_path: Path) -> None:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path), str(ROOT)], check=True, capture_output=True, text=True,
                           timeout=280)
    # the packaging declares what it ships: setuptools has nothing to warn about (it printed ~300 lines once)
    assert "Warning:" not in build.stdout + build.stderr
    (wheel,) = tmp_path.glob("juki-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for service, stem in (("identity", "identity"), ("annex", "annex"), ("disclosure", "disclosure"),
                          ("gateway", "operation_log"), ("agency", "agency")):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert f"juki/{service}/v1/{stem}{suffix}" in names
    assert {"juki/py.typed", "jukilib/py.typed", "jukilib/register/migrations/0001_register.sql",
            "jukilib/domain/data/gunma_municipalities.csv", "juki_services/gateway/purposes.toml",
            "juki_services/gateway/migrations/0001_operation_log.sql", "jukitools/py.typed",
            # the notices' font travels with its licence (IPA Font License v1.0, Article 3 ②)
            "juki_services/disclosure/fonts/ipaexm.ttf",
            "juki_services/disclosure/fonts/IPA_Font_License_Agreement_v1.0.txt"} <= names
    # the services under their own name: a top-level `services` would collide with anyone else's
    assert not any(name.startswith(("tests/", "protos/third_party", "services/")) for name in names)
