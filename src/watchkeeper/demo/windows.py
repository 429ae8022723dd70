"""Windows event builders for the demo: Sysmon, Security and System records in evtx_dump's JSON shape."""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

SYSMON = ("Microsoft-Windows-Sysmon/Operational", "Microsoft-Windows-Sysmon", "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}")
SECURITY = ("Security", "Microsoft-Windows-Security-Auditing", "{54849625-5478-4994-A5BA-3E3B0328C30D}")
SYSTEM = ("System", "Service Control Manager", "{555908d1-a6d7-4695-8e1e-26931d2012f4}")
EVENTLOG_PROVIDER = ("Microsoft-Windows-Eventlog", "{fc65ddd8-d6ef-4962-83d5-6e5cfe9ce148}")
_XMLNS = "http://schemas.microsoft.com/win/2004/08/events/event"


def stamp(t: datetime) -> str:
    """Windows' SystemTime spelling (UTC, 7 fractional digits)."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def utc(t: datetime) -> str:
    """Sysmon's UtcTime spelling."""
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass
class Proc:
    """A running process as Sysmon names it (for parent/child links)."""

    image: str
    command_line: str
    pid: int
    guid: str
    user: str
    integrity: str = "Medium"


@dataclass
class Log:
    """One host's channel: records collected out of order, written in time order with record ids."""

    host: str
    channel: str
    provider: str
    provider_guid: str
    first_record: int
    rng: random.Random
    records: list[tuple[datetime, int, dict[str, Any]]] = field(default_factory=list)

    def add(self, t: datetime, event_id: int, data: dict[str, Any], *, user_data: bool = False,
            provider: tuple[str, str] | None = None, qualifiers: int | None = None) -> None:
        """Queue one record; `user_data` puts the fields under UserData (as 1102 does)."""
        name, guid = provider or (self.provider, self.provider_guid)
        eid: Any = {"#attributes": {"Qualifiers": qualifiers}, "#text": event_id} if qualifiers else event_id
        system = {
            "Provider": {"#attributes": {"Name": name, "Guid": guid}},
            "EventID": eid,
            "Version": 5 if self.channel == SYSMON[0] else 0,
            "Level": 4,
            "Task": event_id if self.channel == SYSMON[0] else 0,
            "Opcode": 0,
            "Keywords": "0x8000000000000000" if self.channel != "Security" else "0x8020000000000000",
            "TimeCreated": {"#attributes": {"SystemTime": stamp(t)}},
            "EventRecordID": 0,  # assigned in time order by `write`
            "Correlation": None,
            "Execution": {"#attributes": {"ProcessID": 3112 if self.channel == SYSMON[0] else 748,
                                          "ThreadID": self.rng.randint(1000, 9000)}},
            "Channel": self.channel,
            "Computer": self.host,
            "Security": {"#attributes": {"UserID": "S-1-5-18"}} if self.channel == SYSMON[0] else None,
        }
        body = {"UserData": data} if user_data else {"EventData": data}
        self.records.append((t, len(self.records), {"Event": {"#attributes": {"xmlns": _XMLNS},
                                                              "System": system, **body}}))

    def write(self, path: Path) -> int:
        """Write the records as JSON lines in time order; returns how many."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            for n, (_, _, record) in enumerate(sorted(self.records, key=lambda r: (r[0], r[1]))):
                record["Event"]["System"]["EventRecordID"] = self.first_record + n
                out.write(orjson.dumps(record) + b"\n")
        return len(self.records)


def guid(rng: random.Random) -> str:
    """A Sysmon-style process GUID."""
    return "{" + str(uuid.UUID(int=rng.getrandbits(128))).upper() + "}"


def hashes(image: str) -> str:
    """Stable, made-up file hashes for an image path."""
    digest = hashlib.sha256(image.lower().encode()).hexdigest().upper()
    md5 = hashlib.md5(image.lower().encode(), usedforsecurity=False).hexdigest().upper()
    return f"SHA256={digest},IMPHASH={md5}"


def process_create(log: Log, t: datetime, parent: Proc, image: str, command_line: str, *,
                   user: str | None = None, integrity: str | None = None, cwd: str = "C:\\Windows\\system32\\",
                   original: str | None = None) -> Proc:
    """Sysmon 1: `parent` starts `image`; returns the child for further steps."""
    rng = log.rng
    child = Proc(image, command_line, rng.randint(1200, 15000), guid(rng), user or parent.user,
                 integrity or parent.integrity)
    name = image.rsplit("\\", 1)[-1]
    log.add(t, 1, {
        "RuleName": "-", "UtcTime": utc(t), "ProcessGuid": child.guid, "ProcessId": child.pid,
        "Image": image, "FileVersion": "10.0.19041.1", "Description": name, "Product": "-",
        "Company": "-", "OriginalFileName": original or name, "CommandLine": command_line,
        "CurrentDirectory": cwd, "User": child.user, "LogonGuid": guid(rng),
        "LogonId": hex(rng.randint(0x10000, 0xFFFFFF)), "TerminalSessionId": 1,
        "IntegrityLevel": child.integrity, "Hashes": hashes(image), "ParentProcessGuid": parent.guid,
        "ParentProcessId": parent.pid, "ParentImage": parent.image, "ParentCommandLine": parent.command_line,
        "ParentUser": parent.user,
    })
    return child


def network_connect(log: Log, t: datetime, proc: Proc, src_ip: str, dst_ip: str, dst_port: int,
                    dst_host: str = "-") -> None:
    """Sysmon 3: an outbound TCP connection."""
    log.add(t, 3, {
        "RuleName": "-", "UtcTime": utc(t), "ProcessGuid": proc.guid, "ProcessId": proc.pid,
        "Image": proc.image, "User": proc.user, "Protocol": "tcp", "Initiated": "true",
        "SourceIsIpv6": "false", "SourceIp": src_ip, "SourceHostname": log.host,
        "SourcePort": log.rng.randint(49152, 65000), "SourcePortName": "-", "DestinationIsIpv6": "false",
        "DestinationIp": dst_ip, "DestinationHostname": dst_host, "DestinationPort": dst_port,
        "DestinationPortName": "https" if dst_port == 443 else "-",
    })


def file_create(log: Log, t: datetime, proc: Proc, path: str) -> None:
    """Sysmon 11: a file is created."""
    log.add(t, 11, {
        "RuleName": "-", "UtcTime": utc(t), "ProcessGuid": proc.guid, "ProcessId": proc.pid,
        "Image": proc.image, "TargetFilename": path, "CreationUtcTime": utc(t), "User": proc.user,
    })


def process_access(log: Log, t: datetime, source: Proc, target: Proc, access: str, trace: str) -> None:
    """Sysmon 10: one process opens another (here: a dump of lsass)."""
    log.add(t, 10, {
        "RuleName": "-", "UtcTime": utc(t), "SourceProcessGUID": source.guid, "SourceProcessId": source.pid,
        "SourceThreadId": log.rng.randint(1000, 9000), "SourceImage": source.image,
        "TargetProcessGUID": target.guid, "TargetProcessId": target.pid, "TargetImage": target.image,
        "GrantedAccess": access, "CallTrace": trace, "SourceUser": source.user, "TargetUser": target.user,
    })


def logon(log: Log, t: datetime, user: str, domain: str, logon_type: int, ip: str, workstation: str) -> None:
    """Security 4624: an account logged on (type 2 console, 3 network, 10 remote interactive)."""
    rng = log.rng
    log.add(t, 4624, {
        "SubjectUserSid": "S-1-5-18" if logon_type != 3 else "S-1-0-0",
        "SubjectUserName": f"{log.host.split('.')[0]}$" if logon_type != 3 else "-",
        "SubjectDomainName": domain if logon_type != 3 else "-",
        "SubjectLogonId": "0x3e7" if logon_type != 3 else "0x0",
        "TargetUserSid": f"S-1-5-21-3623811015-3361044348-30300820-{1100 + sum(map(ord, user)) % 800}",
        "TargetUserName": user, "TargetDomainName": domain, "TargetLogonId": hex(rng.randint(0x100000, 0xFFFFFFF)),
        "LogonType": logon_type, "LogonProcessName": "NtLmSsp " if logon_type == 3 else "User32 ",
        "AuthenticationPackageName": "NTLM" if logon_type == 3 else "Negotiate",
        "WorkstationName": workstation, "LogonGuid": "{00000000-0000-0000-0000-000000000000}",
        "TransmittedServices": "-", "LmPackageName": "NTLM V2" if logon_type == 3 else "-", "KeyLength": 128 if logon_type == 3 else 0,
        "ProcessId": "0x0" if logon_type == 3 else "0x2cc",
        "ProcessName": "-" if logon_type == 3 else "C:\\Windows\\System32\\svchost.exe",
        "IpAddress": ip, "IpPort": str(rng.randint(49152, 65000)) if ip != "-" else "-",
        "ImpersonationLevel": "%%1833", "RestrictedAdminMode": "-", "TargetOutboundUserName": "-",
        "TargetOutboundDomainName": "-", "VirtualAccount": "%%1843", "TargetLinkedLogonId": "0x0",
        "ElevatedToken": "%%1842",
    })


def failed_logon(log: Log, t: datetime, user: str, domain: str, ip: str, workstation: str) -> None:
    """Security 4625: a logon failed (bad password)."""
    log.add(t, 4625, {
        "SubjectUserSid": "S-1-0-0", "SubjectUserName": "-", "SubjectDomainName": "-", "SubjectLogonId": "0x0",
        "TargetUserSid": "S-1-0-0", "TargetUserName": user, "TargetDomainName": domain,
        "Status": "0xc000006d", "FailureReason": "%%2313", "SubStatus": "0xc000006a", "LogonType": 3,
        "LogonProcessName": "NtLmSsp ", "AuthenticationPackageName": "NTLM", "WorkstationName": workstation,
        "IpAddress": ip, "IpPort": str(log.rng.randint(49152, 65000)),
    })


def log_cleared(log: Log, t: datetime, user: str, domain: str) -> None:
    """Security 1102: the audit log was cleared."""
    log.add(t, 1102, {"LogFileCleared": {
        "#attributes": {"xmlns": "http://manifests.microsoft.com/win/2004/08/windows/eventlog"},
        "SubjectUserSid": "S-1-5-21-3623811015-3361044348-30300820-1500", "SubjectUserName": user,
        "SubjectDomainName": domain, "SubjectLogonId": hex(log.rng.randint(0x100000, 0xFFFFFFF)),
    }}, user_data=True, provider=EVENTLOG_PROVIDER)


def service_installed(log: Log, t: datetime, name: str, image_path: str) -> None:
    """System 7045: a service was installed (what PsExec leaves behind)."""
    log.add(t, 7045, {"ServiceName": name, "ImagePath": image_path, "ServiceType": "user mode service",
                      "StartType": "demand start", "AccountName": "LocalSystem"}, qualifiers=16384)


def service_state(log: Log, t: datetime, display: str, state: str) -> None:
    """System 7036: a service entered a state (benign background)."""
    log.add(t, 7036, {"param1": display, "param2": state,
                      "Binary": display.encode("utf-16-le").hex().upper()[:32]}, qualifiers=16384)
