"""Windows event records: flattening to Sigma field names, core fields, and the Sigma logsource table.

Both Windows sources (EVTX files and their JSON renderings) go through here, so an event reads the
same whatever file it came in. Field names follow Zircolite's conventions, because our Sigma results
are compared against Zircolite's: System fields by their own names (`EventID`, `Channel`,
`Computer`, ...), attributes folded into the leaf name (`Provider_Name`, `TimeCreated_SystemTime`,
`Security_UserID`, `Execution_ProcessID`), EventData / UserData fields by their leaf names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.events import RESERVED_COLUMNS, repeated, to_utc_timestamp
from watchkeeper.sources.base import LogSourceMapping

#: Fields holding `ALGO=value,ALGO=value` lists that Sigma rules also query one algorithm at a time.
_HASH_FIELDS = ("Hashes", "Hash")
_HASH_NAMES = frozenset({"SHA1", "MD5", "SHA256", "IMPHASH", "SHA384", "SHA512"})

# Keyword bits of the Security log's audit result (winmeta.xml: AuditFailure / AuditSuccess).
_AUDIT_FAILURE = 0x0010000000000000
_AUDIT_SUCCESS = 0x0020000000000000
_FAILURE_IDS = frozenset({"4625", "4771", "529", "530", "531", "532", "533", "534", "535", "536"})
_MAX_RECORD = 1 << 63
_SUCCESS_IDS = frozenset({"4624", "4648", "4768", "4769", "528", "540"})


def scalar(value: Any) -> str | None:
    """A JSON value as the string Sigma compares against (None when absent)."""
    t = type(value)
    if t is str:
        return value or None
    if t is int:
        return str(value)
    if value is None:
        return None
    if t is bool:
        return "true" if value else "false"
    if t is float:
        return repr(value)
    if t is list:
        parts = [s for s in (scalar(v) for v in value) if s is not None]
        return "\n".join(parts) if parts else None
    return orjson.dumps(value).decode()


def _put(row: dict[str, Any], name: str, value: Any) -> None:
    text = scalar(value) if type(value) is not str else value
    if text:
        row[name] = text


def _leaves(row: dict[str, Any], node: Mapping[str, Any], parent: str) -> None:
    """EventData / UserData: every leaf under its own name; `#text` under its parent's name."""
    for key, value in node.items():
        if key == "#attributes":
            # Attributes of a data element (xmlns, Name) are markup, not event fields.
            continue
        name = parent if key == "#text" else key
        if type(value) is dict:
            _leaves(row, value, name)
        else:
            _put(row, name, value)
            if " " in name:
                # Defender writes `Threat Name`; rules (and Zircolite) say `ThreatName`.
                _put(row, name.replace(" ", ""), value)


def _system(row: dict[str, Any], system: Mapping[str, Any]) -> None:
    """System: leaf names, attributes folded in as `Element_Attribute`, `EventID` from its `#text`."""
    for key, value in system.items():
        if type(value) is not dict:
            _put(row, key, value)
            continue
        for sub, inner in value.items():
            if sub == "#text":
                _put(row, key, inner)
            elif sub == "#attributes" and type(inner) is dict:
                for attr, text in inner.items():
                    _put(row, f"{key}_{attr}", text)
            else:
                _put(row, sub, inner)


def flatten_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten an evtx_dump-style record (`{"Event": {"System": ..., "EventData": ...}}`)."""
    event = record.get("Event", record)
    row: dict[str, Any] = {}
    if type(event) is not dict:
        return row
    system = event.get("System")
    if type(system) is dict:
        _system(row, system)
    for key, value in event.items():
        if key in ("System", "#attributes"):
            continue
        if type(value) is dict:
            _leaves(row, value, key)
        else:
            _put(row, key, value)
    return row


_TIME_FIELDS = ("TimeCreated_SystemTime", "@timestamp", "TimeCreated", "UtcTime", "EventTime")
_HOST_FIELDS = ("Computer", "Hostname")
_USER_FIELDS = ("User", "TargetUserName", "SubjectUserName", "AccountName")
_SRC_IP_FIELDS = ("SourceIp", "IpAddress", "SourceAddress", "ClientAddress")
_DST_IP_FIELDS = ("DestinationIp", "DestAddress", "DestinationAddress")
_PROCESS_FIELDS = ("Image", "NewProcessName", "ProcessName", "Application")
_COMMAND_FIELDS = ("CommandLine", "ProcessCommandLine")
_FILE_FIELDS = ("TargetFilename", "ImageLoaded", "FileName", "ObjectName")


def _coalesce(
    cols: Mapping[str, pa.Array], names: tuple[str, ...], dash_is_absent: bool = False
) -> pa.Array | None:
    """The first present value among `names`, row by row (None when no such column exists).

    `cols` is keyed by lower-cased name: a field counts in whatever spelling the data gave it.
    """
    present = [cols[n.lower()] for n in names if n.lower() in cols]
    if dash_is_absent:
        # Windows writes "-" for an empty account or address; it is not a value.
        present = [pc.if_else(pc.equal(a, "-"), pa.scalar(None, pa.string()), a) for a in present]
    if not present:
        return None
    return present[0] if len(present) == 1 else pc.coalesce(*present)


def _utc_time(text: pa.Array) -> pa.Array:
    """Timestamps as UTC: naive Windows times (UtcTime, SystemTime without zone) are UTC already."""
    if pc.all(pc.ends_with(text, "Z")).as_py() is not False:
        return to_utc_timestamp(text)  # the common case (EVTX SystemTime): no regex to compile
    zoned = pc.match_substring_regex(text, r"(?:[Zz]|[+-]\d\d:?\d\d)$")
    text = pc.if_else(zoned, text, pc.binary_join_element_wise(text, pa.scalar("Z"), ""))
    return to_utc_timestamp(text)


def _keyword_bits(text: str) -> int:
    try:
        return int(text, 0) & 0xFFFFFFFFFFFFFFFF
    except ValueError:
        return 0


_OUTCOMES: dict[tuple[str | None, str | None], str | None] = {}


def outcome(keywords: str | None, event_id: str | None) -> str | None:
    """success / failure from the audit keyword bits, else from well-known logon event ids."""
    key = (keywords, event_id)
    found = _OUTCOMES.get(key, "?")
    if found != "?":
        return found
    bits = _keyword_bits(keywords) if keywords is not None else 0
    if bits & _AUDIT_FAILURE or (not bits & _AUDIT_SUCCESS and event_id in _FAILURE_IDS):
        result: str | None = "failure"
    elif bits & _AUDIT_SUCCESS or event_id in _SUCCESS_IDS:
        result = "success"
    else:
        result = None
    if len(_OUTCOMES) < 4096:
        _OUTCOMES[key] = result
    return result


def record_number(text: str | None, otherwise: int) -> int:
    """The record number an `EventRecordID` text gives, or `otherwise` when it gives none that fits."""
    if text is not None and text.isdigit() and len(text) < 19:
        return int(text)
    return otherwise


def split_hashes(row: dict[str, Any]) -> None:
    """Add `SHA1`, `MD5`, ... fields from a `Hashes` list (kept too), unless the row has them."""
    for field in _HASH_FIELDS:
        text = row.get(field)
        if text is None or "=" not in text:
            continue
        for part in text.split(","):
            algo, sep, digest = part.partition("=")
            algo = algo.strip().upper()
            if sep and digest and algo in _HASH_NAMES and algo not in row:
                row[algo] = digest.strip()


class ColumnBuilder:
    """Collects flattened rows column by column and turns them into one batch.

    Arrow's own inference over a list of dicts (`events.batch_from_rows`) runs at ~30k rows/s on
    wide Windows events; filling Python lists per column and converting each once is several times
    faster, and the core columns are then derived with vectorised compute.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Columns start short and grow: many inputs are small files of a few dozen records.
        self.capacity = min(limit, 64)
        self.n = 0
        self.columns: dict[str, list[str | None]] = {}
        self.records: list[int] = []

    def add(self, row: Mapping[str, str], record: int) -> None:
        """Append one flattened row (string values) with its record number."""
        i = self.n
        if i == self.capacity:
            self._grow()
        if "Hashes" in row or "Hash" in row:
            row = dict(row)
            split_hashes(row)
        columns = self.columns
        for key, value in row.items():
            column = columns.get(key)
            if column is None:
                column = columns[key] = [None] * self.capacity
            column[i] = value
        self.records.append(record)
        self.n = i + 1

    def add_flat(self, record: Mapping[str, Any], line: int) -> None:
        """Append one flat NXLog / OTRF object, stringifying its values on the way."""
        i = self.n
        if i == self.capacity:
            self._grow()
        columns = self.columns
        nested: dict[str, Any] | None = None
        for key, value in record.items():
            t = type(value)
            if t is str:
                if not value:
                    continue
            elif t is int:
                value = str(value)
            else:
                if value is None:
                    continue
                nested = nested if nested is not None else {}
                if t is dict:
                    _leaves(nested, value, key)
                else:
                    _put(nested, key, value)
                continue
            column = columns.get(key)
            if column is None:
                column = columns[key] = [None] * self.capacity
            column[i] = value
        if nested:
            for key, value in nested.items():
                column = columns.get(key)
                if column is None:
                    column = columns[key] = [None] * self.capacity
                if column[i] is None:
                    column[i] = value
        if "Hashes" in record or "Hash" in record or (nested and ("Hashes" in nested or "Hash" in nested)):
            # The lists as the row holds them: the record's own, else a nested leaf's.
            hashes: dict[str, Any] = {}
            for field in _HASH_FIELDS:
                held = columns.get(field)
                if held is not None and held[i] is not None:
                    hashes[field] = held[i]
            split_hashes(hashes)
            for key, value in hashes.items():
                column = columns.get(key)
                if column is None:
                    column = columns[key] = [None] * self.capacity
                if column[i] is None:
                    column[i] = value
        number = record.get("RecordNumber")
        # A record number beyond 64 bits is not one Windows wrote: the line numbers the record.
        self.records.append(number if type(number) is int and 0 <= number < _MAX_RECORD else line)
        self.n = i + 1

    def _grow(self) -> None:
        extra = min(self.limit, self.capacity * 4) - self.capacity
        if extra <= 0:
            raise ValueError(f"ColumnBuilder holds {self.limit} rows already; build() first")
        for column in self.columns.values():
            column.extend([None] * extra)
        self.capacity += extra

    def build(self, source: str, file: str) -> pa.RecordBatch:
        """The batch of everything added so far (native columns, then the reserved ones); resets."""
        n = self.n
        cols: dict[str, pa.Array] = {}
        by_lower: dict[str, str] = {}
        for key, values in self.columns.items():
            array = pa.array(values if n == self.capacity else values[:n], type=pa.string())
            lower = key.lower()
            first = by_lower.get(lower)
            if first is not None:
                # Same field in another spelling: one column, first spelling wins.
                cols[first] = pc.coalesce(cols[first], array)
                continue
            by_lower[lower] = key
            cols[key] = array
        names = list(cols)
        arrays = [cols[k] for k in names]
        lowered = {by_lower_key: cols[first] for by_lower_key, first in by_lower.items()}
        when = _coalesce(lowered, _TIME_FIELDS)
        core: dict[str, pa.Array] = {
            "_time": _utc_time(when) if when is not None else pa.nulls(n, pa.timestamp("us", tz="UTC")),
            "_source": repeated(source, n),
            "_file": repeated(file, n),
            "_record": pa.array(self.records, pa.int64()),
            "_host": _coalesce(lowered, _HOST_FIELDS),
            "_user": _coalesce(lowered, _USER_FIELDS, dash_is_absent=True),
            "_src_ip": _coalesce(lowered, _SRC_IP_FIELDS, dash_is_absent=True),
            "_dst_ip": _coalesce(lowered, _DST_IP_FIELDS, dash_is_absent=True),
            "_process": _coalesce(lowered, _PROCESS_FIELDS),
            "_command_line": _coalesce(lowered, _COMMAND_FIELDS),
            "_file_path": _coalesce(lowered, _FILE_FIELDS),
            "_outcome": _outcomes(cols.get("Keywords"), cols.get("EventID"), n),
        }
        for name, array in core.items():
            names.append(name)
            arrays.append(array if array is not None else pa.nulls(n, RESERVED_COLUMNS[name]))
        # The capacity reached is kept: the next batch of this input is likely as large, and
        # growing again (every column extended, three times over) cost 2% of reading OTRF.
        self.n = 0
        self.columns = {}
        self.records = []
        return pa.RecordBatch.from_arrays(arrays, names=names)


def _outcomes(keywords: pa.Array | None, event_ids: pa.Array | None, n: int) -> pa.Array:
    """`outcome` of each row, computed once per distinct (Keywords, EventID) pair."""
    if keywords is None and event_ids is None:
        return pa.nulls(n, pa.string())
    k_values, k_codes = _codes(keywords, n)
    e_values, e_codes = _codes(event_ids, n)
    width = len(e_values)
    pairs, inverse = np.unique(k_codes * width + e_codes, return_inverse=True)
    distinct = [outcome(k_values[p // width], e_values[p % width]) for p in pairs.tolist()]
    return pa.array(distinct, pa.string()).take(pa.array(inverse.reshape(-1)))


def _codes(column: pa.Array | None, n: int) -> tuple[list[str | None], np.ndarray]:
    """The distinct values of a column (None last) and each row's index among them."""
    if column is None:
        return [None], np.zeros(n, dtype=np.int64)
    encoded = column.dictionary_encode()
    values: list[str | None] = [*encoded.dictionary.to_pylist(), None]
    codes = encoded.indices.fill_null(len(values) - 1).to_numpy().astype(np.int64)
    return values, codes


# --- Sigma logsources ------------------------------------------------------------------------------

SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"

#: Sigma Windows service -> event log channel(s) (pySigma `windows_logsource_mapping` + thor.yml).
SERVICE_CHANNELS: dict[str, tuple[str, ...]] = {
    "security": ("Security",),
    "application": ("Application",),
    "system": ("System",),
    "sysmon": (SYSMON_CHANNEL,),
    "powershell": ("Microsoft-Windows-PowerShell/Operational", "PowerShellCore/Operational"),
    "powershell-classic": ("Windows PowerShell",),
    "taskscheduler": ("Microsoft-Windows-TaskScheduler/Operational",),
    "wmi": ("Microsoft-Windows-WMI-Activity/Operational",),
    "dns-server": ("DNS Server",),
    "dns-server-audit": ("Microsoft-Windows-DNS-Server/Audit",),
    "dns-server-analytic": ("Microsoft-Windows-DNS-Server/Analytical",),
    "driver-framework": ("Microsoft-Windows-DriverFrameworks-UserMode/Operational",),
    "ntlm": ("Microsoft-Windows-NTLM/Operational",),
    "dhcp": ("Microsoft-Windows-DHCP-Server/Operational",),
    "msexchange-management": ("MSExchange Management",),
    "applocker": (
        "Microsoft-Windows-AppLocker/MSI and Script",
        "Microsoft-Windows-AppLocker/EXE and DLL",
        "Microsoft-Windows-AppLocker/Packaged app-Deployment",
        "Microsoft-Windows-AppLocker/Packaged app-Execution",
    ),
    "printservice-admin": ("Microsoft-Windows-PrintService/Admin",),
    "printservice-operational": ("Microsoft-Windows-PrintService/Operational",),
    "codeintegrity-operational": ("Microsoft-Windows-CodeIntegrity/Operational",),
    "smbclient-security": ("Microsoft-Windows-SmbClient/Security",),
    "smbclient-connectivity": ("Microsoft-Windows-SmbClient/Connectivity",),
    "smbserver-connectivity": ("Microsoft-Windows-SMBServer/Connectivity",),
    "firewall-as": ("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",),
    "bits-client": ("Microsoft-Windows-Bits-Client/Operational",),
    "windefend": ("Microsoft-Windows-Windows Defender/Operational",),
    "terminalservices-localsessionmanager": (
        "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
    ),
    "servicebus-client": ("Microsoft-ServiceBus-Client/Operational", "Microsoft-ServiceBus-Client/Admin"),
    "microsoft-servicebus-client": (
        "Microsoft-ServiceBus-Client/Operational",
        "Microsoft-ServiceBus-Client/Admin",
    ),
    "ldap": ("Microsoft-Windows-LDAP-Client/Debug",),
    "ldap_debug": ("Microsoft-Windows-LDAP-Client/Debug",),
    "security-mitigations": (
        "Microsoft-Windows-Security-Mitigations/Kernel Mode",
        "Microsoft-Windows-Security-Mitigations/User Mode",
    ),
    "diagnosis-scripted": ("Microsoft-Windows-Diagnosis-Scripted/Operational",),
    "shell-core": ("Microsoft-Windows-Shell-Core/Operational",),
    "openssh": ("OpenSSH/Operational",),
    "bitlocker": ("Microsoft-Windows-BitLocker/BitLocker Management",),
    "vhdmp": ("Microsoft-Windows-VHDMP/Operational",),
    "appxdeployment-server": ("Microsoft-Windows-AppXDeploymentServer/Operational",),
    "lsa-server": ("Microsoft-Windows-LSA/Operational",),
    "appxpackaging-om": ("Microsoft-Windows-AppxPackaging/Operational",),
    "dns-client": ("Microsoft-Windows-DNS Client Events/Operational",),
    "appmodel-runtime": ("Microsoft-Windows-AppModel-Runtime/Admin",),
    "capi2": ("Microsoft-Windows-CAPI2/Operational",),
    "certificateservicesclient-lifecycle-system": (
        "Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational",
    ),
    "application-experience": (
        "Microsoft-Windows-Application-Experience/Program-Telemetry",
        "Microsoft-Windows-Application-Experience/Program-Compatibility-Assistant",
    ),
    "hyper-v-worker": ("Microsoft-Windows-Hyper-V-Worker",),
    "iis-configuration": ("Microsoft-IIS-Configuration/Operational",),
    "kernel-event-tracing": ("Microsoft-Windows-Kernel-EventTracing",),
    "kernel-shimengine": (
        "Microsoft-Windows-Kernel-ShimEngine/Operational",
        "Microsoft-Windows-Kernel-ShimEngine/Diagnostic",
    ),
    "ntfs": ("Microsoft-Windows-Ntfs/Operational",),
    "sense": ("Microsoft-Windows-SENSE/Operational",),
}

#: Sigma generic category -> Sysmon event ids (pySigma sysmon pipeline, thor.yml).
SYSMON_CATEGORIES: dict[str, tuple[str, ...]] = {
    "process_creation": ("1",),
    "file_change": ("2",),
    "network_connection": ("3",),
    "sysmon_status": ("4", "16"),
    "process_termination": ("5",),
    "driver_load": ("6",),
    "image_load": ("7",),
    "create_remote_thread": ("8",),
    "raw_access_thread": ("9",),
    "process_access": ("10",),
    "file_event": ("11",),
    "registry_add": ("12",),
    "registry_delete": ("12",),
    "registry_set": ("13",),
    "registry_rename": ("14",),
    "registry_event": ("12", "13", "14"),
    "create_stream_hash": ("15",),
    "pipe_created": ("17", "18"),
    "wmi_event": ("19", "20", "21"),
    "dns_query": ("22",),
    "file_delete": ("23",),
    "clipboard_capture": ("24",),
    "clipboard_change": ("24",),
    "process_tampering": ("25",),
    "file_delete_detected": ("26",),
    "file_block_executable": ("27",),
    "file_block_shredding": ("28",),
    "file_executable_detected": ("29",),
    "sysmon_error": ("255",),
}

#: Sigma categories answered by other channels: (category, service, event ids).
CHANNEL_CATEGORIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ps_module", "powershell", ("4103",)),
    ("ps_script", "powershell", ("4104",)),
    ("ps_classic_start", "powershell-classic", ("400",)),
    ("ps_classic_provider_start", "powershell-classic", ("600",)),
    ("ps_classic_script", "powershell-classic", ("800",)),
)


def _logsources() -> tuple[LogSourceMapping, ...]:
    out: list[LogSourceMapping] = []
    for service, channels in SERVICE_CHANNELS.items():
        out.append(LogSourceMapping(product="windows", service=service, conditions={"Channel": channels}))
    for category, ids in SYSMON_CATEGORIES.items():
        conditions: dict[str, tuple[str, ...]] = {"Channel": (SYSMON_CHANNEL,), "EventID": ids}
        if category == "registry_add":
            conditions["EventType"] = ("CreateKey",)
        elif category == "registry_delete":
            conditions["EventType"] = ("DeleteKey", "DeleteValue")
        out.append(LogSourceMapping(product="windows", category=category, conditions=conditions))
    for category, service, ids in CHANNEL_CATEGORIES:
        out.append(
            LogSourceMapping(
                product="windows",
                category=category,
                conditions={"Channel": SERVICE_CHANNELS[service], "EventID": ids},
            )
        )
    # Security 4688 answers process_creation too, with its own names for the images (thor.yml).
    out.append(
        LogSourceMapping(
            product="windows",
            category="process_creation",
            conditions={"Channel": ("Security",), "EventID": ("4688",)},
            renames={"Image": "NewProcessName", "ParentImage": "ParentProcessName"},
        )
    )
    # Defender detections answer the antivirus category (thor.yml).
    out.append(
        LogSourceMapping(
            category="antivirus",
            conditions={
                "Channel": SERVICE_CHANNELS["windefend"],
                "EventID": (
                    "1006",
                    "1007",
                    "1008",
                    "1009",
                    "1010",
                    "1011",
                    "1012",
                    "1017",
                    "1018",
                    "1019",
                    "1115",
                    "1116",
                ),
            },
            renames={"Signature": "ThreatName", "Filename": "Path"},
        )
    )
    # Rules with only `product: windows` look at every Windows event.
    out.append(LogSourceMapping(product="windows"))
    return tuple(out)


WINDOWS_LOGSOURCES: tuple[LogSourceMapping, ...] = _logsources()
