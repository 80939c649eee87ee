"""kagglekit's own requirements against what is installed: each one's status, and what is missing or out of range.

Light: the standard library and `packaging`, no torch, so the notebooks' install cell can check the
environment right after installing the wheel. ``kagglekit doctor`` prints the same statuses as lines.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Status", "requirement_statuses", "requirement_problems", "check_requirements"]

DIST = "kagglekit"


@dataclass(frozen=True)
class Status:
    """One requirement against the installed version.

    ``state`` is ok, missing (not installed), outside (installed, but not in ``spec``) or unknown (a
    version number the range cannot be checked against); ``spec`` is the range as written in setup.py
    (``>=4.44,<6``), empty when there is none.
    """

    name: str
    spec: str
    installed: str | None
    state: str

    def detail(self) -> str:
        """What was found and, unless ok, the fix: the text after ``name: `` in a doctor line."""
        if self.state == "missing":
            return (f"not installed; kagglekit needs {self.name}{self.spec}: {_wheel_fix(f'a {self.name} wheel')} "
                    f"(build_wheel.sh --with-deps '{self.name}{self.spec}' bundles one in the kagglekit dataset).")
        if self.state == "outside":
            fix = ("run kagglekit on a Python in that range" if self.name == "python"
                   else _wheel_fix(f"a {self.name} wheel in that range"))
            return f"{self.installed} is outside the range kagglekit supports ({self.spec}): {fix}."
        if self.state == "unknown":
            return f"{self.installed} is not a version number the range {self.spec} can be checked against."
        return f"{self.installed} (kagglekit supports {self.spec})" if self.spec else str(self.installed)


def _wheel_fix(wheel: str) -> str:
    """How to get `wheel` onto an offline Kaggle machine without pip touching the image's other packages."""
    return f"attach a dataset holding {wheel} and pip install --no-index --no-deps <the wheel>"


def _spec_text(specifier) -> str:
    """A specifier set as people write it, lower bound first: ``>=4.44,<6``."""
    return ",".join(sorted((str(s) for s in specifier), key=lambda s: (not s.startswith(">"), s)))


def _state(version: str | None, spec: str) -> str:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    if version is None:
        return "missing"
    if not spec:
        return "ok"
    try:
        inside = SpecifierSet(spec).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return "unknown"
    return "ok" if inside else "outside"


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def status(name: str, version: str | None, spec: str) -> Status:
    """The `Status` of `name` at `version` (None: not installed) against the range `spec` (``""``: any)."""
    return Status(name, spec, version, _state(version, spec))


def requirement_statuses(extras: Sequence[str] = ()) -> list[Status]:
    """Python, then each requirement kagglekit's installed metadata declares for this environment.

    Requirements with a marker count when the marker holds here (``; python_version < "3.11"``); those of an
    extra (``; extra == "llm"``) only when `extras` names it (``("llm",)``: peft, for a LoRA run).

    Raises:
        importlib.metadata.PackageNotFoundError: kagglekit is not installed as a distribution (it is
            imported from a source folder), so its requirements are unknown.
    """
    from packaging.requirements import Requirement

    requires = md.requires(DIST) or ()
    python_spec = md.metadata(DIST)["Requires-Python"] or ""
    out = [status("python", platform.python_version(), python_spec)]
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": extra}) for extra in ("", *extras)):
            continue
        out.append(status(req.name, installed_version(req.name), _spec_text(req.specifier)))
    return out


def requirement_problems(extras: Sequence[str] = ()) -> list[str]:
    """Every requirement of kagglekit that is not installed or outside its range, as ``name: detail and fix``.

    Returns an empty list when kagglekit runs from a source folder (no package metadata says what it
    needs; a warning says so). A version that cannot be parsed is not counted as a problem. `extras` as in
    `requirement_statuses`.

    Example:
        >>> requirement_problems()
        ["sentencepiece: not installed; kagglekit needs sentencepiece>=0.1.99: attach a dataset ..."]
    """
    import warnings

    try:
        statuses = requirement_statuses(extras)
    except md.PackageNotFoundError:
        warnings.warn("kagglekit is imported from a source folder, not installed, so its requirements are unknown and "
                      "not checked: pip install the kagglekit wheel (or pip install -e .).", stacklevel=2)
        return []
    return [f"{s.name}: {s.detail()}" for s in statuses if s.state in ("missing", "outside")]


def check_requirements(extras: Sequence[str] = ()) -> None:
    """Raise when a requirement of kagglekit (and of `extras`, e.g. ``("llm",)``) is missing or outside its range,
    naming each one and the fix.

    Raises:
        RuntimeError: one line per problem (`requirement_problems`).

    Example:
        >>> check_requirements()  # the notebooks' install cell, right after installing the wheel
    """
    problems = requirement_problems(extras)
    if problems:
        raise RuntimeError("kagglekit's requirements are not met:\n" + "\n".join(f"  {p}" for p in problems))
