"""The package as its users' tools see it: lazy exports, their types for type checkers, the PEP 561 marker."""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import caex

ROOT = Path(caex.__file__).parent


def _type_checking_imports() -> dict[str, str]:
    """``name -> module`` of the imports under ``if TYPE_CHECKING:`` in caex/__init__.py."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    block, = (node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}


def test_type_checkers_see_every_lazy_export_from_where_it_is_imported() -> None:
    """A user's mypy read every ``caex.X`` as Any: the names exist only through __getattr__ at run time."""
    exports = caex._EXPORTS
    assert _type_checking_imports() == exports
    assert sorted(caex.__all__) == sorted(["__version__", *exports])
    for name, module in exports.items():
        assert getattr(caex, name) is getattr(importlib.import_module(module), name)


def test_the_typing_marker_ships_with_the_package() -> None:
    """Without py.typed in the wheel, type checkers ignore caex's annotations (``import-untyped``)."""
    pyproject = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert (ROOT / "py.typed").is_file()
    assert pyproject["tool"]["setuptools"]["package-data"]["caex"] == ["py.typed"]
