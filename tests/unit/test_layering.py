"""Each thing in its own house: jukilib, the library the services share, imports neither a service nor
jukitools (which may import the services), not even lazily inside a function."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

LIBS = Path(__file__).resolve().parents[2] / "libs"
FORBIDDEN = ("juki_services", "services", "jukitools")


def _imported(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "import_module" and node.args:
            yield node.lineno, ast.unparse(node.args[0]).strip("'\"f")


@pytest.mark.parametrize("path", sorted((LIBS / "jukilib").rglob("*.py")), ids=lambda p: p.name)
def test_jukilib_imports_no_service_and_no_tool(path: Path) -> None:
    wrong = [(line, name) for line, name in _imported(path) if name.split(".")[0] in FORBIDDEN]
    assert not wrong, f"{path.relative_to(LIBS)} imports {wrong}"


def test_the_services_are_linked_under_their_installed_name() -> None:
    assert (LIBS / "juki_services").resolve() == LIBS.parent / "services"
