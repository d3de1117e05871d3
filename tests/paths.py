"""Where the tests find the checkout and what lies beside it, wherever a test file sits in ``tests/``."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # golden sets, pretrained configs (CI puts ../shared beside the clone)
