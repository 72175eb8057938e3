"""The User aggregate: one account of the API and the portal.

A user's id is derived from the username (uuid5), so the store itself refuses a second
registration of a name: two processes registering "alice" at once both try to write
version 1 of the same aggregate, and exactly one wins.

Usernames are case-insensitive: the id is derived from the lower-case name, so "Alice" and
"alice" are one account, found by either spelling, and the name is kept as it was first
written. (Before this rule the id came from the name as written; such an account with
capitals is still found under its exact spelling, see pex.application.accounts.) Some names (root,
admin, ...) are reserved: nobody may take them by registering themselves, but an operator
may create them (`pex users add root --admin`). Only an argon2 hash of the password
is ever recorded; hashing belongs to the service layer (pex.application.accounts), which hands the hash in.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from datetime import datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit, urlunsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from pex.domain.errors import DomainError
from pex.domain.values import CopiedByContainers

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the whole name: fullmatch, never match
# Names that would pass for the operator or the system. Compared lower-case and without
# '.', '_' and '-', so "Ad.Min" is reserved too.
RESERVED_USERNAMES = frozenset({
    "root", "admin", "administrator", "administrators", "sysadmin", "system", "superuser", "su",
    "pex", "openpex", "operator", "operators", "support", "security", "staff", "moderator",
    "daemon", "nobody", "anonymous", "guest", "api", "www", "postmaster", "hostmaster", "webmaster",
    "abuse", "noreply", "xen", "xenserver",
})
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this bounds the work one request causes


class AccountError(DomainError):
    """An account command was refused: a malformed username or password."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}: {detail}")


class UsernameTaken(DomainError):
    """Someone registered that username first."""


def user_id(username: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/pex/users/{username.lower()}")


def legacy_user_id(username: str) -> UUID:
    """The id an account got before usernames were case-insensitive: from the name as written."""
    return uuid5(NAMESPACE_URL, f"/pex/users/{username}")


def is_valid_username(username: object) -> bool:
    return isinstance(username, str) and USERNAME.fullmatch(username) is not None


def check_username(username: str) -> None:
    if not is_valid_username(username):
        raise AccountError(
            "username", "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def is_reserved(username: str) -> bool:
    return username.lower().translate(str.maketrans("", "", "._-")) in RESERVED_USERNAMES


def check_not_reserved(username: str) -> None:
    if is_reserved(username):
        raise AccountError("username", "this name is reserved; choose another")


def check_password(password: str) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise AccountError("password", f"between {MIN_PASSWORD_LENGTH} and {MAX_PASSWORD_LENGTH} characters")


# The OpenSSH public key types a guest's sshd accepts from authorized_keys (DSA is gone from OpenSSH).
SSH_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
})
MAX_SSH_KEYS = 5
MAX_SSH_KEY_BYTES = 4096  # a whole line: an RSA key of 16384 bits (ssh-keygen's largest) is some 2.8 KB
MAX_SSH_KEY_COMMENT = 256
SSH_KEY_COMMENT = re.compile(r"[\x21-\x7e][\x20-\x7e]*")  # printable ASCII, no line breaks or NULs


def ssh_key_type_in(blob: bytes) -> str | None:
    """The key type a public key blob names (RFC 4253 §6.6: it starts with a length-prefixed
    string), or None if the blob is too short to name one."""
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length > len(blob) - 4:
        return None
    try:
        return blob[4:4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def normalized_ssh_key(line: object) -> str:
    """One OpenSSH public key line (`type base64 [comment]`), checked and with its whitespace
    normalized; AccountError says what is wrong with it. Options before the type (`from=...`)
    are refused: the key is the user's, the options would be the guest's policy."""
    if not isinstance(line, str):
        raise AccountError("sshKeys", "each key is a string: 'ssh-ed25519 AAAA... comment'")
    if len(line.encode()) > MAX_SSH_KEY_BYTES:
        raise AccountError("sshKeys", f"a key is at most {MAX_SSH_KEY_BYTES} bytes")
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise AccountError("sshKeys", "a key is 'TYPE BASE64 [COMMENT]', as in ~/.ssh/id_ed25519.pub")
    key_type, data = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) == 3 else ""
    if key_type not in SSH_KEY_TYPES:
        raise AccountError("sshKeys", f"the key type is one of {', '.join(sorted(SSH_KEY_TYPES))}")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AccountError("sshKeys", "the key's data is not base64") from None
    if ssh_key_type_in(blob) != key_type or len(blob) <= 4 + len(key_type):
        raise AccountError("sshKeys", f"the key's data is not a {key_type} public key")
    if comment and (len(comment) > MAX_SSH_KEY_COMMENT or not SSH_KEY_COMMENT.fullmatch(comment)):
        raise AccountError("sshKeys", f"a key's comment is at most {MAX_SSH_KEY_COMMENT} printable ASCII characters")
    return " ".join(p for p in (key_type, data, comment) if p)


def normalized_ssh_keys(lines: object) -> tuple[str, ...]:
    """The user's keys, each checked (normalized_ssh_key), duplicates dropped, order kept."""
    if not isinstance(lines, (list, tuple)):
        raise AccountError("sshKeys", "a list of OpenSSH public keys")
    if len(lines) > MAX_SSH_KEYS:
        raise AccountError("sshKeys", f"at most {MAX_SSH_KEYS} keys")
    keys = [normalized_ssh_key(line) for line in lines]
    return tuple(dict.fromkeys(keys))


# Credit (the paper's §5): a balance in the provider's currency (PEX_CURRENCY, simulated money)
# that an administrator grants and that every booking takes from and every early end gives
# back, with PEX_CREDIT=on. Amounts are in cents; one grant is at most this much either way.
MAX_CREDIT_GRANT = Decimal("1000000000")
CREDIT_CENT = Decimal("0.01")
CREDIT_AMOUNT = re.compile(r"-?[0-9]{1,10}(\.[0-9]{1,2})?")  # as the API's CreditGrant says


class CreditError(DomainError):
    """An administrator's grant is malformed or would take the balance below zero."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}: {detail}")


class InsufficientCredit(DomainError):
    """A booking costs more than its user's credit: `price` asked, `balance` held."""

    def __init__(self, price: Decimal, balance: Decimal, what: str = "the reservation"):
        self.price, self.balance = price, balance
        super().__init__(f"{what} costs {price}, and your credit is {balance}; ask an administrator for more")


def credit_amount(value: object, field: str = "amount") -> Decimal:
    """A grant's amount: a number of at most two decimals, not zero, at most MAX_CREDIT_GRANT
    either way (a negative grant takes credit back)."""
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise CreditError(field, "an amount such as \"25.00\" (a string or an integer)")
    text = str(value).strip()
    if not CREDIT_AMOUNT.fullmatch(text):
        raise CreditError(field, f"{text[:40]!r} is not an amount such as \"25.00\" (at most two decimals)")
    try:
        amount = Decimal(text)
    except InvalidOperation:  # pragma: no cover  (the pattern admits only decimals)
        raise CreditError(field, f"{text[:40]!r} is not an amount") from None
    if not amount.is_finite() or amount != amount.quantize(CREDIT_CENT, rounding="ROUND_DOWN"):
        raise CreditError(field, "an amount of at most two decimals")
    if amount == 0 or abs(amount) > MAX_CREDIT_GRANT:
        raise CreditError(field, f"not zero, and at most {MAX_CREDIT_GRANT} either way")
    return amount.quantize(CREDIT_CENT)


MAX_WEBHOOK_URL = 2048
# Names that are this machine or its local network whatever a resolver says.
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may be delivered to `address` without the operator's leave: a global
    unicast address (not loopback, private, link-local, shared, reserved, multicast...); an
    IPv4-mapped IPv6 address counts as the IPv4 address it maps."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def normalized_webhook_url(url: object, allow_private: bool = False) -> str:
    """A webhook's URL, checked: http or https, a host, no credentials (they would be kept in
    the log), no fragment, at most MAX_WEBHOOK_URL characters; unless `allow_private`, no host
    that is a loopback, private or otherwise non-public address, or a local name (the worker
    checks again what a name resolves to at every delivery). AccountError says what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise AccountError("url", "a URL: https://example.org/pex-hook")
    url = url.strip()
    if len(url) > MAX_WEBHOOK_URL or any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise AccountError("url", f"at most {MAX_WEBHOOK_URL} characters, without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as error:
        raise AccountError("url", f"not a URL: {error}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise AccountError("url", "the URL is http:// or https://")
    if not host:
        raise AccountError("url", "the URL names a host")
    if parts.username is not None or parts.password is not None:
        raise AccountError("url", "no credentials in the URL (the receiver checks the signature instead)")
    if parts.fragment or url.endswith("#"):
        raise AccountError("url", "no fragment (#...) in the URL")
    if port == 0:
        raise AccountError("url", "the port is 1 to 65535")
    if not allow_private:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and not is_public_address(address):
            raise AccountError("url", "the host is a loopback, private or otherwise non-public address")
        if address is None and (host in LOCAL_NAMES or host.endswith(LOCAL_SUFFIXES) or "." not in host):
            raise AccountError("url", "the host is a local name; give the receiver's public name")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


class User(CopiedByContainers, Aggregate):
    """An account: a username, the hash of its password, whether it administers the pool, and
    the SSH public keys its VMs let in.

    `password_version` counts the password's changes: a session or a remembered password
    check made under an older version is worth nothing (pex.application.accounts)."""

    class Event(Aggregate.Event):
        at: datetime

    class Registered(Aggregate.Created):
        username: str
        password_hash: str
        is_admin: bool
        at: datetime

    class PasswordChanged(Event):
        password_hash: str

        def apply(self, user: User) -> None:
            user.password_hash = self.password_hash
            user.password_version = getattr(user, "password_version", 0) + 1

    class AdminGranted(Event):
        def apply(self, user: User) -> None:
            user.is_admin = True

    class SshKeysSet(Event):
        """The user's SSH public keys are now `keys` (none: cleared). Public keys are not
        secrets: they are kept in clear, and handed to the user's new VMs (vm-data/)."""

        keys: tuple[str, ...]

        def apply(self, user: User) -> None:
            user.ssh_keys = tuple(self.keys)

    class CreditGranted(Event):
        """An administrator (`by`) granted `amount` of credit (negative: took it back), with a
        `note` for the user; the balance is then `balance`."""

        amount: Decimal
        by: str
        note: str
        balance: Decimal

        def apply(self, user: User) -> None:
            user.credit = self.balance

    class CreditCharged(Event):
        """Confirming `reservation_id` took its price, `amount`, from the credit (PEX_CREDIT=on),
        in the same atomic save as the booking; the balance is then `balance`."""

        reservation_id: UUID
        amount: Decimal
        balance: Decimal

        def apply(self, user: User) -> None:
            user.credit = self.balance
            user.charges = {**getattr(user, "charges", {}), str(self.reservation_id): self.amount}

    class ExtensionCharged(Event):
        """Confirming the extension of `reservation_id`, charged when it was confirmed, took the
        extension's price, `amount`, from the credit, in the same atomic save as its booking;
        the reservation's charge is now what it took in all; the balance is then `balance`."""

        reservation_id: UUID
        amount: Decimal
        balance: Decimal

        def apply(self, user: User) -> None:
            user.credit = self.balance
            charges = getattr(user, "charges", {})
            key = str(self.reservation_id)
            user.charges = {**charges, key: charges.get(key, Decimal("0.00")) + self.amount}

    class CreditRefunded(Event):
        """Ending `reservation_id` before its end (released, deleted or terminated) gave back
        `amount`, the unused part of its charge (pex.domain.pricing.used_part); the balance is
        then `balance`. A charge is refunded at most once."""

        reservation_id: UUID
        amount: Decimal
        balance: Decimal

        def apply(self, user: User) -> None:
            user.credit = self.balance
            charges = dict(getattr(user, "charges", {}))
            charges.pop(str(self.reservation_id), None)
            user.charges = charges

    class WebhookSet(Event):
        """The user's notifications go to `url` from now on, signed with the secret `secret_id`
        names. The secret itself is in no event: it is kept beside the store
        (pex.projections.webhooks), so that removing or rotating it forgets it."""

        username: str
        url: str
        secret_id: str

        def apply(self, user: User) -> None:
            user.webhook_url, user.webhook_secret_id, user.webhook_set_at = self.url, self.secret_id, self.at

    class WebhookRemoved(Event):
        """The user is told nothing any more; what was pending for them is dropped."""

        username: str

        def apply(self, user: User) -> None:
            user.webhook_url, user.webhook_secret_id, user.webhook_set_at = None, None, None

    def __init__(self, username: str, password_hash: str, is_admin: bool, at: datetime):
        self.username = username
        self.password_hash = password_hash
        self.is_admin = is_admin
        self.registered_at = at
        self.password_version = 0
        self.ssh_keys: tuple[str, ...] = ()
        self.credit = Decimal("0.00")
        self.charges: dict[str, Decimal] = {}  # reservation id → what its booking took, until refunded
        self.webhook_url: str | None = None
        self.webhook_secret_id: str | None = None
        self.webhook_set_at: datetime | None = None

    @staticmethod
    def create_id(username: str, **_: object) -> UUID:
        return user_id(username)

    @classmethod
    def register(cls, username: str, password_hash: str, is_admin: bool, at: datetime) -> User:
        check_username(username)
        return cls(username=username, password_hash=password_hash, is_admin=is_admin, at=at)

    def change_password(self, password_hash: str, at: datetime) -> None:
        if password_hash != self.password_hash:
            self.trigger_event(self.PasswordChanged, password_hash=password_hash, at=at)

    def grant_admin(self, at: datetime) -> None:
        if not self.is_admin:
            self.trigger_event(self.AdminGranted, at=at)

    def set_ssh_keys(self, keys: object, at: datetime) -> None:
        """Replace the user's SSH public keys (checked first: normalized_ssh_keys)."""
        checked = normalized_ssh_keys(keys)
        if checked != tuple(getattr(self, "ssh_keys", ())):  # accounts made before keys existed have none
            self.trigger_event(self.SshKeysSet, keys=checked, at=at)

    # --- credit ------------------------------------------------------------------------

    @property
    def balance(self) -> Decimal:
        return getattr(self, "credit", Decimal("0.00"))  # accounts made before credit existed have none

    def grant_credit(self, amount: object, by: str, note: str, at: datetime) -> None:
        """Add `amount` to the credit (a negative one takes it back, never below zero)."""
        checked = credit_amount(amount)
        if not isinstance(note, str) or len(note) > 200:
            raise CreditError("note", "at most 200 characters")
        balance = self.balance + checked
        if balance < 0:
            raise CreditError("amount", f"the balance is {self.balance}: at most that much can be taken back")
        self.trigger_event(self.CreditGranted, amount=checked, by=by, note=note, balance=balance, at=at)

    def charge(self, reservation_id: UUID, price: Decimal, at: datetime) -> None:
        """Take a booking's price from the credit; InsufficientCredit beyond it. A reservation
        is charged once: charging it again records nothing."""
        if str(reservation_id) in getattr(self, "charges", {}):
            return
        if price > self.balance:
            raise InsufficientCredit(price, self.balance)
        self.trigger_event(self.CreditCharged, reservation_id=reservation_id, amount=price, balance=self.balance - price, at=at)

    def charge_extension(self, reservation_id: UUID, price: Decimal, at: datetime) -> None:
        """Take an extension's price from the credit, if its reservation was charged (one
        booked while PEX_CREDIT was off is not, nor is its extension); InsufficientCredit
        beyond the balance."""
        if self.charged_for(reservation_id) is None or price <= 0:
            return
        if price > self.balance:
            raise InsufficientCredit(price, self.balance, "the extension")
        self.trigger_event(self.ExtensionCharged, reservation_id=reservation_id, amount=price, balance=self.balance - price, at=at)

    def charged_for(self, reservation_id: UUID) -> Decimal | None:
        """What the booking of `reservation_id` took and has not had back, if anything."""
        return getattr(self, "charges", {}).get(str(reservation_id))

    def refund(self, reservation_id: UUID, amount: Decimal, at: datetime) -> None:
        """Give back `amount` (at most what was charged) of a reservation's charge, once. A
        reservation that was never charged (booked while PEX_CREDIT was off) gets nothing."""
        charged = self.charged_for(reservation_id)
        if charged is None:
            return
        amount = min(max(amount, Decimal("0.00")), charged)
        self.trigger_event(self.CreditRefunded, reservation_id=reservation_id, amount=amount, balance=self.balance + amount, at=at)

    def set_webhook(self, url: object, secret_id: str, at: datetime, allow_private: bool = False) -> None:
        """Send the user's notifications to `url` (checked first: normalized_webhook_url),
        signed with the secret `secret_id` names."""
        checked = normalized_webhook_url(url, allow_private)
        if (checked, secret_id) != (getattr(self, "webhook_url", None), getattr(self, "webhook_secret_id", None)):
            self.trigger_event(self.WebhookSet, username=self.username, url=checked, secret_id=secret_id, at=at)

    def remove_webhook(self, at: datetime) -> None:
        if getattr(self, "webhook_url", None) is not None:
            self.trigger_event(self.WebhookRemoved, username=self.username, at=at)
