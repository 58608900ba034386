"""Email-client support of the seed digest (bench/email_clients.sh, doiuse-email).

Runs only where node and the npm package doiuse-email are installed (set
DOIUSE_EMAIL to its folder, or `npm install --no-save doiuse-email` in the
repository); the README lists every error that remains and why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOIUSE = Path(os.environ.get("DOIUSE_EMAIL") or ROOT / "node_modules" / "doiuse-email")

# The errors each client may still report: what the README explains.
ALLOWED = {
    "gmail.desktop-webmail": set(),
    "apple-mail.macos": set(),
    "apple-mail.ios": set(),
    "outlook.macos": set(),
    "outlook.windows": {"@media", "border-radius"},
    "gmail.mobile-webmail": {"@media", "display:none"},
}


def test_seed_digest_meets_the_client_targets(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (DOIUSE / "bin" / "cli.js").exists():
        if os.environ.get("CI"):
            pytest.fail("CI must provide node and doiuse-email: .ci/run installs them")
        pytest.skip("needs node and doiuse-email (DOIUSE_EMAIL=... or npm install doiuse-email)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DOIUSE_EMAIL=str(DOIUSE), CLIENTS="gmail.* outlook.* apple-mail.*", PYTHON=sys.executable
    )
    result = subprocess.run(
        [str(ROOT / "bench" / "email_clients.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    per_client, per_family = result.stdout.split("\n\n")
    families = dict(line.split()[:2] for line in per_family.splitlines())
    rows = {}
    for line in per_client.splitlines()[1:]:
        client, errors, _warnings, *features = line.split(maxsplit=3)
        rows[client] = (int(errors), set(features[0].split(", ")) if features else set())
    assert set(rows) >= set(ALLOWED) and len(rows) == 11
    outlook = max(errors for client, (errors, _) in rows.items() if client.startswith("outlook"))
    assert families == {"gmail.*": "0-2", "outlook.*": f"0-{outlook}", "apple-mail.*": "0"}
    for client, allowed in ALLOWED.items():
        errors, features = rows[client]
        assert features <= allowed, (client, features)
        assert (errors == 0) == (not allowed), (client, errors)
