"""The demo bundle as a pytest fixture: built once per session by the same code as ``gsv-edge make-demo``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/demo`` when it is a valid bundle, else a fresh one in a temporary directory."""
    from daemon.model.bundle import Bundle, BundleError

    shipped = Path(__file__).resolve().parents[1] / "models" / "demo"
    try:
        if Bundle.load(shipped).untrained:
            return shipped
    except BundleError:
        pass
    from quantize.demo import make_demo

    return make_demo(tmp_path_factory.mktemp("bundle") / "demo", log=lambda _msg: None)
