"""The shared fixtures are registered once, in ``tests/conftest.py``: a fixture imported into a test module
is a separate fixture there, so a session-scoped bundle would be built again for every such module."""

from __future__ import annotations

import ast

import pytest

from tests.paths import REPO

SHARED_MODULE = "tests.demo_fixtures"


def test_the_shared_fixtures_are_a_plugin(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.has_plugin(SHARED_MODULE)


def test_no_test_module_imports_a_shared_fixture() -> None:
    importers = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            imported = isinstance(node, ast.ImportFrom) and node.module == SHARED_MODULE
            plugin = isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets
            )
            if (imported or plugin) and path.name != "conftest.py":
                importers.append(str(path.relative_to(REPO)))
    assert importers == [], "register shared fixtures in tests/conftest.py only"
