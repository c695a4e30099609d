"""`make monitoring`: create or update the alert policies and the dashboard with gcloud.

Generates the files from the rules (monitoring/cloud.py) into --out, then, in one project:
- with --notify-email, finds or creates an email notification channel and names it in
  every policy;
- updates each policy whose display name already exists, creates the others;
- updates the dashboard of the same display name, or creates it.
Running it again changes the same policies and dashboard instead of adding copies.

    python -m monitoring.apply --project my-project [--service penguin-api]
        [--notify-email oncall@example.org] [--out out/monitoring]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitoring import cloud

#: Runs gcloud with these arguments and returns its standard output (raises on failure).
Gcloud = Callable[[list[str]], str]


class GcloudError(RuntimeError):
    """A gcloud command failed; the message holds the command and what it printed."""


def gcloud(args: list[str]) -> str:
    """Run the gcloud on PATH; its stdout, or GcloudError with its stderr."""
    proc = subprocess.run(["gcloud", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GcloudError(f"gcloud {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def _listed(text: str) -> list[dict[str, Any]]:
    """The resources a `list --format=json` printed (nothing printed: none)."""
    return json.loads(text) if text.strip() else []


def email_channel(run: Gcloud, project: str, email: str, service: str) -> str:
    """The name of the email channel for `email`, created when there is none."""
    where = f"--project={project}"
    channels = _listed(run(["beta", "monitoring", "channels", "list", where, "--format=json"]))
    for channel in channels:
        address = channel.get("labels", {}).get("email_address")
        if channel.get("type") == "email" and address == email:
            return channel["name"]
    created = run(
        ["beta", "monitoring", "channels", "create", where, "--type=email",
         f"--display-name={service} on-call ({email})",
         f"--channel-labels=email_address={email}", "--format=json"]
    )  # fmt: skip
    name = json.loads(created or "{}").get("name") if created.strip() else None
    if not name:
        raise GcloudError(f"gcloud created no notification channel for {email}")
    return name


def apply(
    project: str,
    out: Path,
    service: str = cloud.DEFAULT_SERVICE,
    notify_email: str | None = None,
    run: Gcloud = gcloud,
) -> None:
    """Create or update every policy and the dashboard in `project` (see the module doc)."""
    where = f"--project={project}"
    paths = cloud.write(out, service)
    channel = email_channel(run, project, notify_email, service) if notify_email else None
    existing = {
        p["displayName"]: p["name"]
        for p in _listed(run(["monitoring", "policies", "list", where, "--format=json"]))
    }
    for path in sorted(p for p in paths if p.parent.name == "policies"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if channel:
            doc["notificationChannels"] = [channel]
            path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        name = existing.get(doc["displayName"])
        action = ["update", name] if name else ["create"]
        run(["alpha", "monitoring", "policies", *action, where, f"--policy-from-file={path}"])
        print(f"{'updated' if name else 'created'} alert policy {doc['displayName']}")
    board_path = out / "dashboard.json"
    board = json.loads(board_path.read_text(encoding="utf-8"))
    dashboards = _listed(run(["monitoring", "dashboards", "list", where, "--format=json"]))
    same = [d for d in dashboards if d.get("displayName") == board["displayName"]]
    if same:
        # The etag makes the update fail rather than overwrite someone's edit made meanwhile.
        board["etag"] = same[0].get("etag", "")
        board_path.write_text(json.dumps(board, indent=2) + "\n", encoding="utf-8")
        run(["monitoring", "dashboards", "update", same[0]["name"], where,
             f"--config-from-file={board_path}"])  # fmt: skip
    else:
        run(["monitoring", "dashboards", "create", where, f"--config-from-file={board_path}"])
    print(f"{'updated' if same else 'created'} dashboard {board['displayName']}")


def main(argv: list[str] | None = None) -> int:
    """The command line `make monitoring` runs."""
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.apply",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project", required=True)
    parser.add_argument("--service", default=cloud.DEFAULT_SERVICE)
    parser.add_argument("--notify-email", default=None)
    parser.add_argument("--out", type=Path, default=Path("out/monitoring"))
    args = parser.parse_args(argv)
    try:
        apply(args.project, args.out, args.service, args.notify_email)
    except GcloudError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
