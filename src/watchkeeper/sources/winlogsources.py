"""The Sigma logsources of Windows events: services to channels, categories to event ids.

Shared by every Windows source (EVTX, its JSON renderings, Winlogbeat), so a rule routes the same
whatever file its events came in. The tables follow pySigma's `windows_logsource_mapping` and the
SigmaHQ reference mappings (`tests/thor.yml`).
"""

from __future__ import annotations

from watchkeeper.sources.base import LogSourceMapping

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
