"""The lock files stay the truth of what CI tests and the image runs (issue 19).

``requirements.lock`` (runtime) and ``requirements-dev.lock`` (runtime + the ``dev`` extra) are written
by ``bash .ci/lock`` (pip-compile --generate-hashes) from ``pyproject.toml``. These tests fail when they
drift: a dependency added to pyproject or its floor raised without re-locking, a pin without hashes, an
environment whose installed versions are not the lock's (then ``pip install -r requirements-dev.lock``
would not reproduce CI), or an image that stops installing the lock in its own layer before the code.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"


@dataclass
class Pin:
    name: NormalizedName
    specifier: str
    hashes: list[str] = field(default_factory=list)

    @property
    def version(self) -> str | None:
        """The exact version when pinned with ``==`` (and nothing else), else ``None``."""
        specs = list(Requirement(f"{self.name}{self.specifier}").specifier)
        if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
            return specs[0].version
        return None


def parse_lock(path: Path) -> dict[NormalizedName, Pin]:
    """Requirement lines of a pip-compile output with their ``--hash`` options (comments dropped)."""
    pins: dict[NormalizedName, Pin] = {}
    current: Pin | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("--hash") else raw.strip()
        if not line:
            continue
        line = line.removesuffix("\\").strip()
        if line.startswith("--hash="):
            assert current is not None, f"{path.name}: a hash before any requirement: {raw!r}"
            current.hashes.append(line.removeprefix("--hash="))
            continue
        assert not line.startswith("-"), f"{path.name}: unexpected option {raw!r} (indexes are not locked)"
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} listed twice"
        current = pins[name] = Pin(name, str(requirement.specifier))
    return pins


def needed_by(path: Path) -> dict[NormalizedName, set[str]]:
    """Why each package is in a pip-compile output: the ``# via`` names under its pin (a package, or
    ``<project> (pyproject.toml)`` for a dependency the project declares)."""
    via: dict[NormalizedName, set[str]] = {}
    current: NormalizedName | None = None
    listing = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw and not raw[0].isspace() and not raw.startswith("#"):
            current, listing = canonicalize_name(Requirement(raw.removesuffix("\\").strip()).name), False
        elif current is not None and raw.strip().startswith("# via"):
            rest = raw.strip().removeprefix("# via").strip()
            via.setdefault(current, set()).update([rest] if rest else [])
            listing = not rest
        elif current is not None and listing and raw.strip().startswith("#   "):
            via[current].add(raw.strip().removeprefix("#").strip())
        else:
            listing = False
    return via


def declared(requirements: list[str]) -> list[Requirement]:
    return [Requirement(r) for r in requirements]


RUNTIME = declared(PYPROJECT["project"]["dependencies"])
DEV = declared(PYPROJECT["project"]["optional-dependencies"]["dev"])
BUILD = declared(PYPROJECT["build-system"]["requires"])
LOCKS = {
    "requirements.lock": (RUNTIME_LOCK, RUNTIME + BUILD),
    "requirements-dev.lock": (DEV_LOCK, RUNTIME + DEV + BUILD),
}


@pytest.mark.parametrize("lock_name", LOCKS)
def test_every_locked_package_is_pinned_exactly_with_hashes(lock_name: str) -> None:
    path, _ = LOCKS[lock_name]
    pins = parse_lock(path)
    assert len(pins) > 20, f"{lock_name} looks empty: run bash .ci/lock"
    for pin in pins.values():
        assert pin.version is not None, f"{lock_name}: {pin.name}{pin.specifier} is not pinned with =="
        assert pin.hashes, f"{lock_name}: {pin.name} has no --hash"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{lock_name}: {pin.name}: bad hash {digest}"


@pytest.mark.parametrize("lock_name", LOCKS)
def test_every_declared_dependency_is_locked_within_its_range(lock_name: str) -> None:
    """What pyproject asks for (project, its extra, the build backend) is in the lock and satisfies the range:
    adding a dependency or raising a floor without ``bash .ci/lock`` fails here."""
    path, wanted = LOCKS[lock_name]
    pins = parse_lock(path)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock_name} lacks {requirement} (pyproject.toml): run bash .ci/lock"
        version = pins[name].version
        assert version is not None
        assert requirement.specifier.contains(Version(version), prereleases=True), (
            f"{lock_name} pins {name}=={version}, outside pyproject's {requirement}: run bash .ci/lock"
        )


def test_runtime_lock_is_the_runtime_part_of_the_dev_lock() -> None:
    """The image (requirements.lock) runs the very versions CI tests (requirements-dev.lock), and carries
    none of the dev tools."""
    runtime, dev = parse_lock(RUNTIME_LOCK), parse_lock(DEV_LOCK)
    differ = {n: (p.version, dev[n].version if n in dev else None) for n, p in runtime.items()}
    differ = {n: versions for n, versions in differ.items() if versions[0] != versions[1]}
    assert not differ, f"runtime vs dev lock: {differ}: run bash .ci/lock"
    dev_only = {canonicalize_name(r.name) for r in DEV} - {canonicalize_name(r.name) for r in RUNTIME}
    # A package the dev extra declares may be in the image only because a runtime package needs it
    # (aiohttp: twilio needs it, the benchmark's load generator declares it for itself).
    via = needed_by(RUNTIME_LOCK)
    stray = sorted(n for n in dev_only & runtime.keys() if not via.get(n) or any("pyproject" in v for v in via[n]))
    assert not stray, f"dev tools in requirements.lock: {stray}"


def test_why_a_package_is_locked_is_read_from_the_via_comments() -> None:
    """The reading the check above relies on: one-line and listed ``# via`` both come back."""
    via = needed_by(RUNTIME_LOCK)
    assert {"twilio", "aiohttp-retry"} <= via[canonicalize_name("aiohttp")], via.get(canonicalize_name("aiohttp"))
    assert "switchboard (pyproject.toml)" in via[canonicalize_name("fastapi")], via.get(canonicalize_name("fastapi"))
    assert via[canonicalize_name("aiohappyeyeballs")] == {"aiohttp"}, via.get(canonicalize_name("aiohappyeyeballs"))


def test_locks_name_no_index_and_say_how_to_relock() -> None:
    for path in (RUNTIME_LOCK, DEV_LOCK):
        text = path.read_text(encoding="utf-8")
        assert "bash .ci/lock" in text, f"{path.name} was not written by .ci/lock"
        assert "Python 3.11" in text, f"{path.name} is not locked for Python 3.11"


def test_installed_versions_are_the_locked_ones() -> None:
    """This environment (CI's, or a developer's who followed the README) has exactly the dev lock's
    versions, so installing from the lock reproduces what CI tested."""
    wrong: dict[str, tuple[str, str | None]] = {}
    for name, pin in parse_lock(DEV_LOCK).items():
        try:
            installed: str | None = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        assert pin.version is not None
        if installed is None or Version(installed) != Version(pin.version):
            wrong[name] = (pin.version, installed)
    assert not wrong, (
        f"installed versions differ from requirements-dev.lock (locked, installed): {wrong}; "
        "pip install -r requirements-dev.lock"
    )


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def test_dockerfile_installs_the_runtime_lock_before_the_code() -> None:
    steps = dockerfile_instructions()

    def index(predicate: object, what: str) -> int:
        found = [i for i, step in enumerate(steps) if predicate(*step)]  # type: ignore[operator]
        assert found, f"deploy/Dockerfile: no step that {what}"
        return found[0]

    copy_lock = index(lambda k, a: k == "COPY" and a.split()[0] == "requirements.lock", "copies requirements.lock")
    install_lock = index(
        lambda k, a: k == "RUN" and "pip install" in a and "--require-hashes" in a and "-r requirements.lock" in a,
        "installs requirements.lock with --require-hashes",
    )
    first_code = index(
        lambda k, a: k in {"COPY", "ADD"} and a.split()[0] not in {"requirements.lock", "--chown"},
        "copies the code",
    )
    install_code = index(lambda k, a: k == "RUN" and "pip install" in a and "-r " not in a, "installs the project")
    assert copy_lock < install_lock < first_code < install_code, steps
    for keyword, args in steps[copy_lock + 1 : install_lock]:
        assert keyword != "COPY", f"the lock's layer must not depend on other files: COPY {args}"
    assert "--no-deps" in steps[install_code][1], "the project must not resolve anything past the lock"
    assert "requirements-dev.lock" not in " ".join(a for _, a in steps), "the image gets the runtime lock only"
