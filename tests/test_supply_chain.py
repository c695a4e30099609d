"""Supply chain: the locked runtime dependencies (requirements.lock) have no known vulnerabilities.

pip-audit checks each pinned version against PyPI's vulnerability data
(``https://pypi.org/pypi/<name>/<version>/json``). Some PyPI mirrors serve only the
project-level document (``/pypi/<name>/json``), whose ``vulnerabilities`` list describes
the project's newest release; pip-audit then reports the package as "not found" and
audits nothing. For those packages this test reads the project document instead when the
locked version *is* the newest release, so the answer is the same one pip-audit would
have given. A package that neither route can audit, and every vulnerability we accept,
must be written down below (and in docs/reliability.md) with the reason — otherwise the
test fails.

``make audit`` runs this file alone and prints the per-package table.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCK = REPO_ROOT / "requirements.lock"

#: Vulnerability IDs we accept, with why. Empty: nothing known affects the locked set.
ACCEPTED_VULNERABILITIES: dict[str, str] = {}

#: (package, version) pairs that cannot be audited where CI runs, with why. Keyed by version
#: so that a bump makes the entry stale and the test asks for a fresh look.
UNAUDITABLE: dict[tuple[str, str], str] = {
    ("numpy", "2.4.6"): (
        "newest numpy for Python 3.11 (numpy 2.5 requires Python >= 3.12); the PyPI index "
        "CI reaches publishes vulnerability data only for a project's newest release "
        "(2.5.x, none known), so 2.4.6 itself is checked only where pypi.org's per-version "
        "data is reachable"
    ),
}


def locked_versions() -> dict[str, str]:
    """name -> version for every pin in the lock file (names normalised as PyPI does)."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", LOCK.read_text(), re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def run_pip_audit() -> list[dict]:
    """pip-audit on the lock, hashes as written (no resolver, no install): its JSON entries."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "--disable-pip",
            "--requirement",
            str(LOCK),
            "--format",
            "json",
            "--progress-spinner",
            "off",
            *(f"--ignore-vuln={vuln}" for vuln in ACCEPTED_VULNERABILITIES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.stdout.strip(), f"pip-audit gave no report (exit {proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout)["dependencies"]


def newest_release_vulnerabilities(name: str, version: str) -> list[str] | None:
    """PyPI's vulnerability IDs for `name` if `version` is its newest release, else None."""
    response = requests.get(f"https://pypi.org/pypi/{name}/json", timeout=30)
    response.raise_for_status()
    doc = response.json()
    if doc["info"]["version"] != version:
        return None
    return [v["id"] for v in doc.get("vulnerabilities", []) if not v.get("withdrawn")]


@pytest.fixture(scope="module")
def audit(request: pytest.FixtureRequest) -> dict[str, tuple[str, list[str] | None]]:
    """package -> (how it was audited, vulnerability IDs or None if it could not be)."""
    if not LOCK.is_file():
        pytest.fail("requirements.lock is missing: there is nothing to audit")
    versions = locked_versions()
    results: dict[str, tuple[str, list[str] | None]] = {}
    for entry in run_pip_audit():
        name = re.sub(r"[-_.]+", "-", entry["name"]).lower()
        if "skip_reason" not in entry:
            ids = [v["id"] for v in entry["vulns"]]
            results[name] = ("pip-audit", ids)
        else:
            ids = newest_release_vulnerabilities(name, versions[name])
            ids = [i for i in ids if i not in ACCEPTED_VULNERABILITIES] if ids is not None else None
            results[name] = ("pypi newest-release data", ids)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"\npip-audit of {LOCK.name}: {len(results)} packages")
        for name, (how, ids) in sorted(results.items()):
            found = "NOT AUDITED" if ids is None else (", ".join(ids) or "no known vulnerabilities")
            pin = f"{name}=={versions[name]}"
            print(f"  {pin:<28} {how:<26} {found}")
    return results


def test_every_locked_package_was_audited(audit: dict) -> None:
    assert set(audit) == set(locked_versions()), "pip-audit did not report every pin"


def test_locked_dependencies_have_no_known_vulnerabilities(audit: dict) -> None:
    found = {name: ids for name, (_, ids) in audit.items() if ids}
    assert not found, f"known vulnerabilities in requirements.lock: {found}"


def test_packages_that_cannot_be_audited_are_written_down_with_a_reason(audit: dict) -> None:
    versions = locked_versions()
    unaudited = {(name, versions[name]) for name, (_, ids) in audit.items() if ids is None}
    assert unaudited <= set(UNAUDITABLE), f"not audited and not explained: {unaudited}"


def test_every_written_exception_still_applies() -> None:
    versions = locked_versions()
    stale = [pin for pin in UNAUDITABLE if versions.get(pin[0]) != pin[1]]
    assert not stale, f"UNAUDITABLE lists pins no longer in the lock, re-check them: {stale}"
