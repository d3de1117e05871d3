"""A box without some optional language extras, simulated on one that has them: their packages can be neither
found nor imported (``sys.modules[name] = None``), in this process or in a child one."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

from daemon.frontend import languages


def hide_extra(monkeypatch: pytest.MonkeyPatch, language: str) -> None:
    """In this process until the test ends: ``language``'s packages are gone and its module is read afresh."""
    import daemon.app.service
    import daemon.frontend

    spec = languages.OPTIONAL_LANGUAGES[language]
    for package in spec.packages:
        monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.delitem(sys.modules, f"daemon.frontend.{spec.module}", raising=False)
    monkeypatch.delattr(daemon.frontend, spec.module, raising=False)
    monkeypatch.setattr(languages, "_loaded", {})
    lookup = daemon.app.service._unspoken_languages
    monkeypatch.setattr(daemon.app.service, "_unspoken_languages", functools.cache(lookup.__wrapped__))


def hiding_site(where: Path, language: str) -> Path:
    """A directory to put first on a child process's PYTHONPATH: its ``sitecustomize`` hides ``language``'s
    packages there."""
    where.mkdir(parents=True, exist_ok=True)
    names = languages.OPTIONAL_LANGUAGES[language].packages
    (where / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in names), encoding="utf-8")
    return where
