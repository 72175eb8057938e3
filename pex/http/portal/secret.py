"""The web portal's secret (pex.settings.PortalSettings: PEX_SECRET_KEY, PEX_VAR_DIR).

The session cookie and the CSRF tokens are signed with one secret. Every gunicorn worker, and
every host behind one load balancer, must sign with the same secret, or a session made by one
worker is refused by the next: production sets PEX_SECRET_KEY. The embedded default (one host,
SQLite under ./var/) generates a secret once and keeps it in var/portal-secret-key, written
atomically (mode 0600, in a directory PEX makes 0700) so that workers starting together all
read the same one.

Whoever can read the key can forge any session, and whoever can write it can plant one they
know: a key file that the group or others may read or write, or that another user owns, is
refused (SettingsError, with how to fix it) rather than trusted.
"""

from __future__ import annotations

import os
import secrets
import stat

from pex.settings import PortalSettings, SettingsError

SECRET_FILE = "portal-secret-key"


def portal_secret(settings: PortalSettings) -> str:
    """The secret the portal signs with: PEX_SECRET_KEY's, or the one kept in the var directory."""
    return settings.secret_key or stored_secret(settings.var_dir)


def private_directory(path: str) -> None:
    """Make `path` (and its missing parents) 0700 if it does not exist; leave an existing one."""
    try:
        os.makedirs(path, mode=0o700)
    except FileExistsError:
        pass


def check_private(path: str, fd: int, uid: int | None = None) -> None:
    """Refuse a secret file that is not ours alone."""
    info = os.fstat(fd)
    owner = os.geteuid() if uid is None else uid
    if info.st_uid != owner:
        raise SettingsError(
            f"{path} is owned by uid {info.st_uid}, not by this process (uid {owner}): "
            "remove it (a new secret is made) or set PEX_SECRET_KEY"
        )
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: others may read or change the portal's secret; "
            f"remove it (a new secret is made, and every session ends) or `chmod 600 {path}`"
        )


def stored_secret(var_dir: str, uid: int | None = None) -> str:
    """The secret kept in `var_dir`, created on first use. Safe when several processes race:
    the file appears whole (written aside, then hard-linked into place) and the first wins.
    `uid` is the owner the file must have (this process's effective uid)."""
    private_directory(var_dir)
    path = os.path.join(var_dir, SECRET_FILE)
    try:
        with open(path, encoding="ascii") as f:
            check_private(path, f.fileno(), uid)
            existing = f.read().strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    candidate = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secrets.token_urlsafe(48))
    try:
        os.link(candidate, path)
    except FileExistsError:
        pass  # another process won; use its secret
    finally:
        os.unlink(candidate)
    with open(path, encoding="ascii") as f:
        check_private(path, f.fileno(), uid)
        return f.read().strip()
