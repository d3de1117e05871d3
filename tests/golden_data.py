"""Where upstream's golden data is read from: ``GSV_GOLDEN_DIR``, else ``../shared/golden`` beside the repository.

A test that needs a file skips, saying so, when the default directory is simply not there; when
``GSV_GOLDEN_DIR`` names a directory without the file it fails, since someone asked for that data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.paths import SHARED

ENV = "GSV_GOLDEN_DIR"
CHOSEN = os.environ.get(ENV)
GOLDEN_DIR = Path(CHOSEN) if CHOSEN else SHARED / "golden"


def load(name: str) -> dict[str, Any] | None:
    """The JSON file ``name`` of the golden directory, or None when it is not there."""
    path = GOLDEN_DIR / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def missing(name: str) -> NoReturn:
    """Skip (or fail, when ``GSV_GOLDEN_DIR`` was set) a test whose golden file ``name`` is absent."""
    path = GOLDEN_DIR / name
    if CHOSEN:
        pytest.fail(f"{ENV} is set but {path} does not exist")
    pytest.skip(f"golden file not found: {path} (set {ENV})")
