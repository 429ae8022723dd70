"""Microsoft 365 unified audit log records and auth.log lines for the demo."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

TENANT = "4f9b6a1e-2c3d-4e5f-8a7b-9c0d1e2f3a4b"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class AuditLog:
    """The tenant's unified audit log: records in the Management Activity API's JSON shape."""

    rng: random.Random
    records: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)

    def add(self, t: datetime, workload: str, operation: str, user: str, ip: str, record_type: int,
            **extra: Any) -> None:
        """Queue one audit record."""
        self.records.append((t, {
            "CreationTime": t.strftime("%Y-%m-%dT%H:%M:%S"), "Id": _uuid(self.rng), "Operation": operation,
            "OrganizationId": TENANT, "RecordType": record_type, "ResultStatus": extra.pop("ResultStatus", "Succeeded"),
            "UserKey": f"10032001{self.rng.getrandbits(32):08X}", "UserType": 0, "Version": 1,
            "Workload": workload, "ClientIP": ip, "UserId": user, **extra,
        }))

    def login(self, t: datetime, user: str, ip: str, agent: str) -> None:
        """UserLoggedIn from Entra ID."""
        self.add(t, "AzureActiveDirectory", "UserLoggedIn", user, ip, 15, ObjectId="00000002-0000-0ff1-ce00-000000000000",
                 ResultStatus="Success", ExtendedProperties=[{"Name": "UserAgent", "Value": agent},
                                                             {"Name": "RequestType", "Value": "OAuth2:Authorize"}])

    def mail_accessed(self, t: datetime, user: str, ip: str) -> None:
        """MailItemsAccessed, the bulk of an Exchange tenant's log."""
        self.add(t, "Exchange", "MailItemsAccessed", user, ip, 50, MailboxOwnerUPN=user,
                 OperationProperties=[{"Name": "MailAccessType", "Value": "Bind"}],
                 LogonType=0, ExternalAccess=False)

    def file_accessed(self, t: datetime, user: str, ip: str, url: str) -> None:
        """FileAccessed in SharePoint Online."""
        self.add(t, "SharePoint", "FileAccessed", user, ip, 6, ObjectId=url, SiteUrl=url.rsplit("/", 2)[0] + "/",
                 SourceFileName=url.rsplit("/", 1)[-1], ItemType="File")

    def cmdlet(self, t: datetime, user: str, ip: str, operation: str, object_id: str,
               parameters: list[tuple[str, str]]) -> None:
        """An Exchange cmdlet (New-InboxRule, Set-Mailbox …) with its parameters."""
        self.add(t, "Exchange", operation, user, ip, 1, ObjectId=object_id, ExternalAccess=False,
                 OrganizationName="mjn.onmicrosoft.com", OriginatingServer="AM6PR07MB4412 (15.20.7452.028)",
                 Parameters=[{"Name": n, "Value": v} for n, v in parameters])

    def write(self, path: Path) -> int:
        """Write the records as JSON lines in time order; returns how many."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            for _, record in sorted(self.records, key=lambda r: r[0]):
                out.write(orjson.dumps(record) + b"\n")
        return len(self.records)


@dataclass
class AuthLog:
    """A Linux host's /var/log/auth.log (traditional syslog timestamps, no year)."""

    host: str
    rng: random.Random
    lines: list[tuple[datetime, int, str]] = field(default_factory=list)

    def add(self, t: datetime, program: str, pid: int | None, message: str) -> None:
        """Queue one line: `Mar 10 10:05:01 host program[pid]: message`."""
        tag = f"{program}[{pid}]" if pid is not None else program
        stamp = f"{t.strftime('%b')} {t.day:>2} {t.strftime('%H:%M:%S')}"
        self.lines.append((t, len(self.lines), f"{stamp} {self.host} {tag}: {message}"))

    def cron_session(self, t: datetime, user: str = "root") -> None:
        """A cron job's PAM session opening and closing."""
        pid = self.rng.randint(2000, 60000)
        self.add(t, "CRON", pid, f"pam_unix(cron:session): session opened for user {user}(uid=0) by (uid=0)")
        self.add(t.replace(second=min(59, t.second + 1)), "CRON", pid, f"pam_unix(cron:session): session closed for user {user}")

    def ssh_accepted(self, t: datetime, user: str, ip: str, method: str = "publickey") -> int:
        """A successful SSH logon; returns the sshd pid."""
        pid = self.rng.randint(2000, 60000)
        port = self.rng.randint(40000, 65000)
        key = " ssh2: ED25519 SHA256:q3Rk9vWm1fXb0cJ7yHn2Lp5sT8aZu4eG6dK1oQwVxYz" if method == "publickey" else " ssh2"
        self.add(t, "sshd", pid, f"Accepted {method} for {user} from {ip} port {port}{key}")
        self.add(t, "sshd", pid, f"pam_unix(sshd:session): session opened for user {user}(uid=1001) by (uid=0)")
        return pid

    def ssh_failed(self, t: datetime, user: str, ip: str, valid: bool) -> None:
        """A failed SSH password attempt (an unknown user logs `Invalid user` first)."""
        pid = self.rng.randint(2000, 60000)
        port = self.rng.randint(40000, 65000)
        if not valid:
            self.add(t, "sshd", pid, f"Invalid user {user} from {ip} port {port}")
            self.add(t, "sshd", pid, f"Failed password for invalid user {user} from {ip} port {port} ssh2")
        else:
            self.add(t, "sshd", pid, f"Failed password for {user} from {ip} port {port} ssh2")

    def sudo(self, t: datetime, user: str, cwd: str, command: str) -> None:
        """Sudo's record of a command run as root."""
        self.add(t, "sudo", None, f"{user:>8} : TTY=pts/0 ; PWD={cwd} ; USER=root ; COMMAND={command}")
        pid = self.rng.randint(2000, 60000)
        self.add(t, "sudo", pid, f"pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid=1001)")

    def write(self, path: Path) -> int:
        """Write the lines in time order; returns how many."""
        path.parent.mkdir(parents=True, exist_ok=True)
        ordered = sorted(self.lines, key=lambda r: (r[0], r[1]))
        path.write_text("".join(line + "\n" for _, _, line in ordered), encoding="utf-8")
        return len(ordered)
