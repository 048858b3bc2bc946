"""Webhook signatures: verify what arrives, sign what leaves.

Two schemes:

- ``standard-webhooks``: the Standard Webhooks scheme (also Svix's). Headers
  ``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature``, a
  space-separated list of ``v1,<base64 HMAC-SHA256>`` entries over
  ``{id}.{timestamp}.{body}``; any entry that matches passes, so senders can rotate keys.
- ``hmac-sha256``: one HMAC-SHA256 digest of the raw body in a named header, hex or
  base64, optionally prefixed (GitHub's ``X-Hub-Signature-256: sha256=<hex>``).

Failures raise `SignatureFailure` with a message naming what was wrong; messages and
reprs never contain a secret, an expected digest or the body.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from bizproxy.errors import SignatureFailure

SignatureScheme = Literal["standard-webhooks", "hmac-sha256"]
DigestEncoding = Literal["hex", "base64"]

SCHEMES: tuple[SignatureScheme, ...] = ("standard-webhooks", "hmac-sha256")

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

_SECRET_PREFIX = "whsec_"
_MASK = "[secure]"


@runtime_checkable
class Verifier(Protocol):
    """Checks one inbound request's signature."""

    def verify(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> str | None:
        """Return the message id (None when the scheme has none); raise SignatureFailure."""
        ...


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Look a header up by name, ignoring case; None when it is absent."""
    value = headers.get(name)
    if value is not None:
        return value

    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a secret: base64 after a ``whsec_`` prefix, else the UTF-8 bytes."""
    if not secret:
        raise ValueError("a signing secret must not be empty")
    if not secret.startswith(_SECRET_PREFIX):
        return secret.encode()

    encoded = secret.removeprefix(_SECRET_PREFIX)
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise ValueError(
            "a signing secret starting with 'whsec_' must continue in base64, and this one does not"
        ) from None
    if not key:
        raise ValueError("a signing secret must not be empty after its 'whsec_' prefix")
    return key


def _keys(secret: str | Sequence[str]) -> tuple[bytes, ...]:
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("at least one signing secret is required")
    return tuple(standard_webhooks_key(s) for s in secrets)


def _signed_content(message_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{message_id}.{timestamp}.".encode() + body


def _hmac_sha256(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def sign_standard_webhooks(
    secret: str | Sequence[str], message_id: str, timestamp: int | float, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one outbound message.

    Several secrets give several signatures in one header, as during a key rotation.
    """
    if not message_id:
        raise ValueError("a message id must not be empty")

    stamp = str(int(timestamp))
    content = _signed_content(message_id, stamp, body)
    signatures = " ".join(
        "v1," + base64.b64encode(_hmac_sha256(key, content)).decode() for key in _keys(secret)
    )
    return {ID_HEADER: message_id, TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signatures}


class StandardWebhooksVerifier:
    """Verifies Standard Webhooks signatures, with a timestamp tolerance either side of now.

    Several secrets may be given, so the receiving side can rotate too.
    """

    scheme: SignatureScheme = "standard-webhooks"

    def __init__(self, secret: str | Sequence[str], tolerance_seconds: float = 300.0) -> None:
        if tolerance_seconds < 0:
            raise ValueError(f"tolerance_seconds must be 0 or more, got {tolerance_seconds!r}")
        self._keys = _keys(secret)
        self.tolerance_seconds = float(tolerance_seconds)

    def __repr__(self) -> str:
        return (
            f"StandardWebhooksVerifier(secret={_MASK}, tolerance_seconds={self.tolerance_seconds})"
        )

    def verify(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> str | None:
        """Return the verified message id; raise SignatureFailure when it does not verify."""
        message_id = _required(headers, ID_HEADER)
        stamp = _required(headers, TIMESTAMP_HEADER)
        signatures = _required(headers, SIGNATURE_HEADER)

        self._check_timestamp(stamp, time.time() if now is None else now)

        content = _signed_content(message_id, stamp, body)
        expected = [_hmac_sha256(key, content) for key in self._keys]
        _match_entries(_parse_entries(signatures), expected)
        return message_id

    def _check_timestamp(self, stamp: str, now: float) -> None:
        if not (stamp.isascii() and stamp.isdigit()):
            raise SignatureFailure(
                f"malformed header {TIMESTAMP_HEADER!r}: expected whole unix seconds, "
                f"got {stamp[:40]!r}"
            )

        skew = int(stamp) - now
        if abs(skew) > self.tolerance_seconds:
            direction = "in the future" if skew > 0 else "in the past"
            raise SignatureFailure(
                f"header {TIMESTAMP_HEADER!r} is {abs(skew):.0f}s {direction}, outside the "
                f"tolerance of {self.tolerance_seconds:g}s"
            )


def _required(headers: Mapping[str, str], name: str) -> str:
    value = header_value(headers, name)
    if value is None:
        raise SignatureFailure(f"missing header {name!r}")
    if not value.strip():
        raise SignatureFailure(f"malformed header {name!r}: it is empty")
    return value.strip()


def _parse_entries(signatures: str) -> list[tuple[str, bytes | None]]:
    """Split the signature header into (version, digest); digest None when not base64."""
    entries: list[tuple[str, bytes | None]] = []
    for position, entry in enumerate(signatures.split(), start=1):
        version, comma, encoded = entry.partition(",")
        if not comma or not version:
            raise SignatureFailure(
                f"malformed header {SIGNATURE_HEADER!r}: entry {position} is not of the "
                "form 'version,signature'"
            )
        entries.append((version, _b64decode(encoded)))
    return entries


def _match_entries(entries: list[tuple[str, bytes | None]], expected: list[bytes]) -> None:
    v1 = [digest for version, digest in entries if version == "v1"]
    # Compare every entry with every key, without stopping early, so timing says nothing
    # about which entry or key matched.
    matched = False
    for digest in v1:
        for candidate in expected:
            matched |= digest is not None and hmac.compare_digest(digest, candidate)
    if matched:
        return

    if not v1:
        versions = ", ".join(sorted({version for version, _ in entries}))
        raise SignatureFailure(
            f"no 'v1' signature in header {SIGNATURE_HEADER!r} (versions present: {versions})"
        )
    if all(digest is None for digest in v1):
        raise SignatureFailure(
            f"malformed header {SIGNATURE_HEADER!r}: no 'v1' signature is valid base64"
        )
    noun = "signature" if len(v1) == 1 else "signatures"
    raise SignatureFailure(
        f"no signature matched: checked {len(v1)} 'v1' {noun} in header {SIGNATURE_HEADER!r}"
    )


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return None


class HmacSha256Verifier:
    """Verifies an HMAC-SHA256 digest of the raw body carried in one header."""

    scheme: SignatureScheme = "hmac-sha256"

    def __init__(
        self, secret: str, header: str, prefix: str = "", encoding: DigestEncoding = "hex"
    ) -> None:
        if not secret:
            raise ValueError("a signing secret must not be empty")
        if not header:
            raise ValueError("the signature header name must not be empty")
        if encoding not in ("hex", "base64"):
            raise ValueError(f"encoding must be 'hex' or 'base64', got {encoding!r}")
        self._key = secret.encode()
        self.header = header
        self.prefix = prefix
        self.encoding: DigestEncoding = encoding

    def __repr__(self) -> str:
        return (
            f"HmacSha256Verifier(secret={_MASK}, header={self.header!r}, "
            f"prefix={self.prefix!r}, encoding={self.encoding!r})"
        )

    def sign(self, body: bytes) -> str:
        """The header value a sender with the same secret would attach to this body."""
        digest = _hmac_sha256(self._key, body)
        text = digest.hex() if self.encoding == "hex" else base64.b64encode(digest).decode()
        return self.prefix + text

    def verify(
        self, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> str | None:
        """Return None when the digest matches; raise SignatureFailure otherwise."""
        value = _required(headers, self.header)
        if not value.startswith(self.prefix):
            raise SignatureFailure(
                f"malformed header {self.header!r}: it does not start with {self.prefix!r}"
            )

        given = self._decode(value.removeprefix(self.prefix))
        if not hmac.compare_digest(given, _hmac_sha256(self._key, body)):
            raise SignatureFailure(f"no signature matched: header {self.header!r} is wrong")
        return None

    def _decode(self, text: str) -> bytes:
        try:
            if self.encoding == "hex":
                return bytes.fromhex(text)
            return base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raise SignatureFailure(
                f"malformed header {self.header!r}: the digest is not valid {self.encoding}"
            ) from None


_OPTIONS: dict[SignatureScheme, frozenset[str]] = {
    "standard-webhooks": frozenset({"secret", "tolerance_seconds"}),
    "hmac-sha256": frozenset({"secret", "header", "prefix", "encoding"}),
}


def build_verifier(scheme: str, **options: Any) -> Verifier:
    """Build the verifier for a scheme name as written in routes.yaml."""
    if scheme == "standard-webhooks":
        _check_options("standard-webhooks", options)
        return StandardWebhooksVerifier(**options)
    if scheme == "hmac-sha256":
        _check_options("hmac-sha256", options)
        return HmacSha256Verifier(**options)

    hint = difflib.get_close_matches(scheme, SCHEMES, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    known = ", ".join(repr(s) for s in SCHEMES)
    raise ValueError(f"unknown signature scheme {scheme!r} (known: {known}){suggestion}")


def _check_options(scheme: SignatureScheme, options: Mapping[str, Any]) -> None:
    allowed = _OPTIONS[scheme]
    unknown = sorted(set(options) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed))
        raise ValueError(
            f"unknown option {unknown[0]!r} for signature scheme {scheme!r} (expected: {expected})"
        )
    if "secret" not in options:
        raise ValueError(f"signature scheme {scheme!r} needs a 'secret'")


class DeliveredIds:
    """Message ids delivered recently: a bounded window used to drop replays.

    A validly signed message may arrive twice (a retry, or a replay within the timestamp
    tolerance). `seen_before` records an id and says whether it was already recorded
    within `window_seconds`. Memory stays bounded: past `max_entries` the oldest go first.
    A window of twice the verifier's tolerance covers every replay the tolerance admits.
    """

    def __init__(self, window_seconds: float, max_entries: int) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries!r}")
        self.window_seconds = float(window_seconds)
        self.max_entries = max_entries
        self._recorded: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._recorded)

    def seen_before(self, message_id: str, now: float | None = None) -> bool:
        """True when the id was recorded within the window; otherwise record it now."""
        if self.contains(message_id, now):
            return True
        self.record(message_id, now)
        return False

    def contains(self, message_id: str, now: float | None = None) -> bool:
        """True when the id was recorded within the window; records nothing."""
        moment = time.monotonic() if now is None else now
        self._forget_older_than(moment - self.window_seconds)
        recorded_at = self._recorded.get(message_id)
        return recorded_at is not None and moment - recorded_at <= self.window_seconds

    def record(self, message_id: str, now: float | None = None) -> None:
        """Remember the id as delivered now (after the delivery succeeded)."""
        moment = time.monotonic() if now is None else now
        self._recorded.pop(message_id, None)
        self._recorded[message_id] = moment
        while len(self._recorded) > self.max_entries:
            self._recorded.popitem(last=False)

    def _forget_older_than(self, cutoff: float) -> None:
        # Entries are in recording order, so the stale ones are at the front.
        while self._recorded:
            oldest_id, recorded_at = next(iter(self._recorded.items()))
            if recorded_at >= cutoff:
                return
            del self._recorded[oldest_id]
