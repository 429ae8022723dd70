"""The programs whose syslog messages say who, from where, did what: sshd, PAM, sudo, su, useradd …

Messages are parsed a block at a time: each pattern runs once (Arrow's RE2 kernel) over the
messages of its program, and a program's patterns are tried in order, each on the messages no
earlier one matched. sudo and the account tools write `KEY=value` lists whose keys become field
names; they are few, so they are parsed line by line. The core fields set here are `_user`,
`_src_ip`, `_action`, `_outcome` and `_command_line`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from watchkeeper.events import col
from watchkeeper.sources.assign import Assignments, Rows

_ACTION, _OUTCOME, _USER = col("action"), col("outcome"), col("user")
_SRC_IP, _COMMAND_LINE = col("src_ip"), col("command_line")

AUTH_PROGRAMS = frozenset(
    {
        "sshd",
        "sshd-session",
        "sudo",
        "su",
        "login",
        "useradd",
        "userdel",
        "usermod",
        "passwd",
        "chpasswd",
        "groupadd",
        "groupdel",
        "groupmod",
        "gpasswd",
        "chage",
        "chsh",
        "chfn",
        "newgrp",
        "systemd-logind",
        "cron",
        "crond",
        "pkexec",
        "polkitd",
        "unix_chkpwd",
        "sshd-auth",
    }
)

# Every pattern is anchored where Python's `re.match` would be; all run under RE2.
_REPEATED = r"^message repeated (?P<n>\d+) times: \[ ?(?P<text>.*?)\]?$"
_SSH_ACCEPTED = (
    r"^(?P<verdict>Accepted|Failed) (?P<method>\S+) for (?P<invalid>invalid user )?(?P<user>.*?)"
    r" from (?P<ip>\S+) port (?P<port>\d+)"
)
_SSH_INVALID = r"^[Ii]nvalid user (?P<user>.*?) from (?P<ip>\S+)(?: port (?P<port>\d+))?"
_SSH_DISCONNECT = (
    r"^(?:Received disconnect from|Disconnected from|Connection closed by|Connection reset by)"
    r" (?:(?:authenticating |invalid )?user (?P<user>\S*) )?(?P<ip>\S+) port (?P<port>\d+)"
)
_SSH_MAXTRIES = (
    r"maximum authentication attempts exceeded for (?P<invalid>invalid user )?(?P<user>.*?)"
    r" from (?P<ip>\S+) port (?P<port>\d+)"
)
_PAM = r"^pam_unix\((?P<service>[^:)]+):(?P<kind>[^)]+)\): (?P<rest>.*)"
_PAM_SESSION = (
    r"^session (?P<verb>opened|closed) for user (?P<user>\S+?)(?:\(uid=\d+\))?"
    r"(?: by (?P<by>\S*?)(?:\(uid=\d+\))?)?$"
)
# pam_unix's own wording, every key once, in its order: what a dict of `key=value` pairs holds.
_VALUE = r"[^\t\n\v\f\r ]*"  # a `\S*` of Python's ASCII classes (RE2's `\s` leaves out \v)
_PAM_FAILURE = (
    rf"^authentication failure; logname={_VALUE} uid={_VALUE} euid={_VALUE} tty={_VALUE}"
    rf" ruser={_VALUE} rhost=(?P<rhost>{_VALUE})(?: +user=(?P<user>{_VALUE}))?$"
)
_PASSWD = r"^password changed for (?P<user>\S+)"
_SU = r"^(?P<verdict>Successful|FAILED) su for (?P<target>\S+) by (?P<user>\S+)"
_SU_SHORT = r"^(?P<sign>[+-]) (?P<tty>\S+) (?P<user>\S+?):(?P<target>\S+)$"
_LOGIND = r"^(?P<verb>New|Removed) session (?P<session>\S+?)(?: of user (?P<user>\S+?))?\.$"
_CRON_CMD = r"^\((?P<user>\S+)\) CMD \((?P<command>.*)\)$"
_LOGIN_FAIL = r"^FAILED LOGIN \(\d+\) on '(?P<tty>[^']*)' FOR '(?P<user>[^']*)'"
_LOGIN_ROOT = r"^ROOT LOGIN +on '(?P<tty>[^']*)'"

_PAM_FIELDS = re.compile(r"(\w+)=(\S*)", re.ASCII)
_NEW_USER = re.compile(r"new (user|group): (.*)", re.ASCII)
_KV_COMMA = re.compile(r"(\w+)=([^,]*)", re.ASCII)
_USERMOD = re.compile(r"(?:add|delete) '([^']+)' (?:to|from) (?:shadow )?group '([^']+)'", re.ASCII)

Groups: TypeAlias = Any  # a pa.StructArray of a pattern's named groups (pyarrow has no stubs)
Handler = Callable[[Assignments, Rows, Groups], None]


def parse_programs(
    out: Assignments, rows: Rows, programs: pa.Array, bases: pa.Array, texts: pa.Array
) -> None:
    """Set the fields of the known programs' messages; `rows` are the block rows with a program tag."""
    pam = pc.fill_null(pc.starts_with(texts, "pam_unix("), False).to_numpy(zero_copy_only=False)
    if pam.any():
        _cascade(out, rows[pam], texts.filter(pam), [(_PAM, _pam)])
    # The old form `sshd(pam_unix)[123]: ...` names the PAM service in the tag.
    old_pam = ~pam & pc.fill_null(pc.ends_with(programs, "(pam_unix)"), False).to_numpy(zero_copy_only=False)
    if old_pam.any():
        out.set("pam_service", rows[old_pam], bases.filter(old_pam))
        _pam_message(out, rows[old_pam], texts.filter(old_pam))
    rest = ~(pam | old_pam)
    base_of = bases.to_numpy(zero_copy_only=False)
    for names, parse in _PROGRAMS:
        mine = rest & np.isin(base_of, names)
        if mine.any():
            parse(out, rows[mine], texts.filter(mine))


def _cascade(
    out: Assignments, rows: Rows, texts: pa.Array, steps: list[tuple[str, Handler]]
) -> tuple[Rows, pa.Array]:
    """Try each pattern on the texts no earlier one matched; hand each its matches' groups.
    Return the rows and texts no pattern matched."""
    for pattern, handle in steps:
        if not len(rows):
            break
        found = pc.extract_regex(texts, pattern)
        hit = found.is_valid().to_numpy(zero_copy_only=False)
        if hit.any():
            handle(out, rows[hit], found.filter(hit))
            rows, texts = rows[~hit], texts.filter(~hit)
    return rows, texts


def _when(values: pa.Array, rows: Rows, text: str) -> Rows:
    """The rows whose value equals `text`."""
    return rows[pc.equal(values, text).to_numpy(zero_copy_only=False)]


def _peer(out: Assignments, rows: Rows, g: Groups, user: str = "user") -> None:
    out.set(_USER, rows, g.field(user))
    out.set(_SRC_IP, rows, g.field("ip"))
    out.set("src_port", rows, g.field("port"))


# --- sshd ----------------------------------------------------------------------------------------


def _sshd(out: Assignments, rows: Rows, texts: pa.Array) -> None:
    repeated = pc.extract_regex(texts, _REPEATED)
    hit = repeated.is_valid().to_numpy(zero_copy_only=False)
    if hit.any():
        # syslog folds identical lines; the count is kept, the event stays one row
        out.set("repeated", rows[hit], repeated.filter(hit).field("n"))
        texts = pc.if_else(repeated.is_valid(), repeated.field("text"), texts)
    _cascade(
        out,
        rows,
        texts,
        [
            (_SSH_ACCEPTED, _ssh_logon),
            (_SSH_INVALID, _ssh_invalid),
            (_SSH_DISCONNECT, _ssh_disconnect),
            (_SSH_MAXTRIES, _ssh_maxtries),  # not anchored: searched anywhere in the message
        ],
    )


def _ssh_logon(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "logon")
    out.set(_OUTCOME, rows, "failure")
    out.set(_OUTCOME, _when(g.field("verdict"), rows, "Accepted"), "success")
    out.set("auth_method", rows, g.field("method"))
    _peer(out, rows, g)
    out.set("invalid_user", rows[pc.not_equal(g.field("invalid"), "").to_numpy(zero_copy_only=False)], "true")


def _ssh_invalid(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "invalid_user")
    out.set(_OUTCOME, rows, "failure")
    _peer(out, rows, g)


def _ssh_disconnect(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "disconnect")
    _peer(out, rows, g)


def _ssh_maxtries(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "max_auth_attempts")
    out.set(_OUTCOME, rows, "failure")
    _peer(out, rows, g)


# --- PAM -----------------------------------------------------------------------------------------


def _pam(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set("pam_service", rows, g.field("service"))
    out.set("pam_type", rows, g.field("kind"))
    _pam_message(out, rows, g.field("rest"))


def _pam_message(out: Assignments, rows: Rows, texts: pa.Array) -> None:
    failure = pc.starts_with(texts, "authentication failure").to_numpy(zero_copy_only=False)
    if failure.any():
        # The usual form by pattern; anything else by the exact key=value reading, line by line.
        left_rows, left = _cascade(out, rows[failure], texts.filter(failure), [(_PAM_FAILURE, _pam_failed)])
        if len(left_rows):
            _by_line(out, left_rows, left, _pam_failure)
    _cascade(out, rows[~failure], texts.filter(~failure), [(_PAM_SESSION, _pam_session), (_PASSWD, _passwd)])


def _pam_session(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "session_close")
    out.set(_ACTION, _when(g.field("verb"), rows, "opened"), "session_open")
    out.set(_OUTCOME, rows, "success")
    out.set(_USER, rows, g.field("user"))
    out.set("by_user", rows, g.field("by"))


def _pam_failed(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "authenticate")
    out.set(_OUTCOME, rows, "failure")
    out.set(_SRC_IP, rows, g.field("rhost"))
    out.set(_USER, rows, g.field("user"))


def _pam_failure(text: str, row: dict[str, Any]) -> None:
    # `key=value` pairs where the last of a key counts: a dict of findall says it exactly.
    row[_ACTION] = "authenticate"
    row[_OUTCOME] = "failure"
    fields = dict(_PAM_FIELDS.findall(text))
    if fields.get("rhost"):
        row[_SRC_IP] = fields["rhost"]
    if fields.get("user"):
        row[_USER] = fields["user"]


def _passwd(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "password_change")
    out.set(_OUTCOME, rows, "success")
    out.set(_USER, rows, g.field("user"))


# --- sudo, su, accounts, sessions, cron, login ---------------------------------------------------


def _sudo(text: str, row: dict[str, Any]) -> None:
    user, sep, rest = text.partition(" : ")
    if not sep:
        return
    row[_USER] = user.strip()
    row[_ACTION] = "sudo"
    notes = []
    for part in rest.split(" ; "):
        key, eq, value = part.partition("=")
        if eq and key.isupper() and key.isalpha() and key.isascii():
            row[key] = value  # TTY, PWD, USER, COMMAND: the names Sigma's sudo rules use
        else:
            notes.append(part.strip())
    if notes:
        row["sudo_error"] = "; ".join(notes)
    row[_OUTCOME] = "failure" if notes else "success"
    if "COMMAND" in row:
        row[_COMMAND_LINE] = row["COMMAND"]


def _su(out: Assignments, rows: Rows, texts: pa.Array) -> None:
    _cascade(out, rows, texts, [(_SU, _su_long), (_SU_SHORT, _su_short)])


def _su_long(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "su")
    out.set(_OUTCOME, rows, "failure")
    out.set(_OUTCOME, _when(g.field("verdict"), rows, "Successful"), "success")
    out.set("target_user", rows, g.field("target"))
    out.set(_USER, rows, g.field("user"))


def _su_short(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "su")
    out.set(_OUTCOME, rows, "failure")
    out.set(_OUTCOME, _when(g.field("sign"), rows, "+"), "success")
    out.set("tty", rows, g.field("tty"))
    out.set(_USER, rows, g.field("user"))
    out.set("target_user", rows, g.field("target"))


def _account(text: str, row: dict[str, Any]) -> None:
    m = _NEW_USER.match(text)
    if m is not None:
        row[_ACTION] = "user_create" if m.group(1) == "user" else "group_create"
        row[_OUTCOME] = "success"
        for key, value in _KV_COMMA.findall(m.group(2)):
            if not key.startswith("_"):  # the message names fields, never our core ones
                row[key] = value.strip()  # name, UID, GID, home, shell
        if row.get("name"):
            row[_USER] = row["name"]
        return
    m = _USERMOD.match(text)
    if m is not None:
        row[_ACTION] = "group_member_add" if text.startswith("add") else "group_member_remove"
        row[_OUTCOME] = "success"
        row[_USER] = m.group(1)
        row["group"] = m.group(2)


def _logind(out: Assignments, rows: Rows, texts: pa.Array) -> None:
    _cascade(out, rows, texts, [(_LOGIND, _logind_session)])


def _logind_session(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "session_close")
    out.set(_ACTION, _when(g.field("verb"), rows, "New"), "session_open")
    out.set("session", rows, g.field("session"))
    out.set(_USER, rows, g.field("user"))


def _cron(out: Assignments, rows: Rows, texts: pa.Array) -> None:
    _cascade(out, rows, texts, [(_CRON_CMD, _cron_command)])


def _cron_command(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "execute")
    out.set(_USER, rows, g.field("user"))
    out.set(_COMMAND_LINE, rows, g.field("command"))


def _login(out: Assignments, rows: Rows, texts: pa.Array) -> None:
    _cascade(out, rows, texts, [(_LOGIN_FAIL, _login_failed), (_LOGIN_ROOT, _login_root)])


def _login_failed(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "logon")
    out.set(_OUTCOME, rows, "failure")
    out.set("tty", rows, g.field("tty"))
    out.set(_USER, rows, g.field("user"))


def _login_root(out: Assignments, rows: Rows, g: Groups) -> None:
    out.set(_ACTION, rows, "logon")
    out.set(_OUTCOME, rows, "success")
    out.set("tty", rows, g.field("tty"))
    out.set(_USER, rows, "root")


def _by_line(
    out: Assignments, rows: Rows, texts: pa.Array, parse: Callable[[str, dict[str, Any]], None]
) -> None:
    """Parse rare messages one at a time into row dicts and set what they hold."""
    values: dict[str, tuple[list[int], list[Any]]] = {}
    for row, text in zip(rows.tolist(), texts.to_pylist(), strict=True):
        fields: dict[str, Any] = {}
        parse(text, fields)
        for key, value in fields.items():
            where, got = values.setdefault(key, ([], []))
            where.append(row)
            got.append(value)
    for key, (where, got) in values.items():
        out.set(key, np.asarray(where, dtype=np.int64), pa.array(got, pa.string()))


def _line_parser(
    parse: Callable[[str, dict[str, Any]], None],
) -> Callable[[Assignments, Rows, pa.Array], None]:
    def run(out: Assignments, rows: Rows, texts: pa.Array) -> None:
        _by_line(out, rows, texts, parse)

    return run


#: Program names (lower case, without `(pam_unix)`) and the parser of their messages.
_PROGRAMS: tuple[tuple[list[str], Callable[[Assignments, Rows, pa.Array], None]], ...] = (
    (["sshd", "sshd-session"], _sshd),
    (["sudo"], _line_parser(_sudo)),
    (["su"], _su),
    (["useradd", "groupadd", "usermod", "gpasswd"], _line_parser(_account)),
    (["systemd-logind"], _logind),
    (["cron", "crond"], _cron),
    (["login"], _login),
)
