from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from bizproxy.errors import SignatureFailure
from bizproxy.signing import (
    DeliveredIds,
    HmacSha256Verifier,
    StandardWebhooksVerifier,
    Verifier,
    build_verifier,
    sign_standard_webhooks,
)

# The known-answer vector of the Standard Webhooks reference libraries' own tests.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_700_000_000.0
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
BODY = b'{"type":"order.paid","data":{"id":17}}'


def signed(secret: str = SECRET, body: bytes = BODY, timestamp: float = NOW) -> dict[str, str]:
    return sign_standard_webhooks(secret, "msg_1", timestamp, body)


def failure(verifier: Verifier, headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(SignatureFailure) as caught:
        verifier.verify(headers, body, now=NOW)
    return str(caught.value)


def test_sign_standard_webhooks_matches_published_vector() -> None:
    """Signing the reference libraries' vector gives their published signature."""
    headers = sign_standard_webhooks(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)

    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_standard_webhooks_verifier_accepts_published_vector() -> None:
    """The published vector verifies at its own timestamp and yields its message id."""
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    verifier = StandardWebhooksVerifier(SPEC_SECRET, tolerance_seconds=300)

    assert verifier.verify(headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10) == SPEC_ID


def test_sign_standard_webhooks_matches_independent_hmac() -> None:
    """The signature equals an HMAC-SHA256 computed here over id.timestamp.body."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()

    headers = signed()

    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_standard_webhooks_key_plain_secret_uses_utf8_bytes() -> None:
    """A secret without the whsec_ prefix is used as its UTF-8 bytes."""
    digest = hmac.new("pässword".encode(), b"m.5.x", hashlib.sha256).digest()

    headers = sign_standard_webhooks("pässword", "m", 5, b"x")

    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_standard_webhooks_verifier_round_trips_signed_headers() -> None:
    """Headers from sign_standard_webhooks verify and return the message id."""
    verifier = StandardWebhooksVerifier(SECRET, tolerance_seconds=300)

    assert verifier.verify(signed(), BODY, now=NOW) == "msg_1"


def test_standard_webhooks_verifier_ignores_header_case() -> None:
    """Header names match whatever their case."""
    headers = {name.title(): value for name, value in signed().items()}

    assert StandardWebhooksVerifier(SECRET).verify(headers, BODY, now=NOW) == "msg_1"


def test_standard_webhooks_verifier_accepts_any_rotated_signature() -> None:
    """When the header carries several signatures, the one made with our key passes."""
    headers = sign_standard_webhooks([OTHER_SECRET, SECRET], "msg_1", NOW, BODY)
    entries = headers["webhook-signature"].split(" ")
    headers["webhook-signature"] = f"v1a,AAAA {entries[0]} v2,{entries[1][3:]} {entries[1]}"

    assert StandardWebhooksVerifier(SECRET).verify(headers, BODY, now=NOW) == "msg_1"


def test_standard_webhooks_verifier_accepts_any_of_its_secrets() -> None:
    """A verifier given old and new secrets accepts a message signed with either."""
    verifier = StandardWebhooksVerifier([SECRET, OTHER_SECRET])

    assert verifier.verify(signed(OTHER_SECRET), BODY, now=NOW) == "msg_1"


def test_standard_webhooks_verifier_rejects_wrong_secret() -> None:
    """A signature made with another secret matches nothing."""
    message = failure(StandardWebhooksVerifier(SECRET), signed(OTHER_SECRET))

    assert message.startswith("no signature matched")


def test_standard_webhooks_verifier_rejects_tampered_body() -> None:
    """A body changed after signing does not verify."""
    message = failure(StandardWebhooksVerifier(SECRET), signed(), body=BODY + b" ")

    assert message.startswith("no signature matched")


def test_standard_webhooks_verifier_rejects_tampered_id() -> None:
    """The message id is signed too, so changing it breaks the signature."""
    headers = signed() | {"webhook-id": "msg_2"}

    assert failure(StandardWebhooksVerifier(SECRET), headers).startswith("no signature matched")


def test_standard_webhooks_verifier_rejects_stale_timestamp() -> None:
    """A timestamp older than the tolerance fails, naming the tolerance."""
    headers = signed(timestamp=NOW - 301)

    message = failure(StandardWebhooksVerifier(SECRET, tolerance_seconds=300), headers)

    assert "301s in the past" in message
    assert "outside the tolerance of 300s" in message


def test_standard_webhooks_verifier_rejects_future_timestamp() -> None:
    """A timestamp further ahead than the tolerance fails too."""
    headers = signed(timestamp=NOW + 301)

    message = failure(StandardWebhooksVerifier(SECRET, tolerance_seconds=300), headers)

    assert "301s in the future" in message


def test_standard_webhooks_verifier_accepts_edge_of_tolerance() -> None:
    """A timestamp exactly at the tolerance either side still verifies."""
    verifier = StandardWebhooksVerifier(SECRET, tolerance_seconds=300)

    assert verifier.verify(signed(timestamp=NOW - 300), BODY, now=NOW) == "msg_1"
    assert verifier.verify(signed(timestamp=NOW + 300), BODY, now=NOW) == "msg_1"


def test_standard_webhooks_verifier_defaults_now_to_wall_clock() -> None:
    """Without `now`, the current unix time is used."""
    headers = signed(timestamp=time.time())

    assert StandardWebhooksVerifier(SECRET).verify(headers, BODY) == "msg_1"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_webhooks_verifier_names_missing_header(missing: str) -> None:
    """Each missing header is named in the failure."""
    headers = signed()
    del headers[missing]

    assert failure(StandardWebhooksVerifier(SECRET), headers) == f"missing header {missing!r}"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("webhook-timestamp", "1700000000.5", "malformed header 'webhook-timestamp'"),
        ("webhook-timestamp", "soon", "malformed header 'webhook-timestamp'"),
        ("webhook-signature", "", "malformed header 'webhook-signature': it is empty"),
        ("webhook-signature", "v1abc", "entry 1 is not of the form 'version,signature'"),
        ("webhook-signature", "v1,!!!notbase64", "no 'v1' signature is valid base64"),
        ("webhook-signature", "v1a,AAAA v2,AAAA", "no 'v1' signature in header"),
    ],
)
def test_standard_webhooks_verifier_names_malformed_header(
    name: str, value: str, expected: str
) -> None:
    """A header that cannot be parsed is reported as malformed, by name."""
    headers = signed() | {name: value}

    assert expected in failure(StandardWebhooksVerifier(SECRET), headers)


def test_standard_webhooks_verifier_messages_never_leak() -> None:
    """No failure message contains the secret, an expected digest or the body."""
    verifier = StandardWebhooksVerifier(SECRET)
    good = signed()
    cases = [
        signed(OTHER_SECRET),
        good | {"webhook-timestamp": str(int(NOW) - 9999)},
        good | {"webhook-signature": "v1,AAAA"},
        good | {"webhook-signature": "garbage"},
    ]
    secret_text = SECRET.removeprefix("whsec_")
    expected_digest = good["webhook-signature"].removeprefix("v1,")

    for headers in cases:
        message = failure(verifier, headers)
        assert secret_text not in message
        assert expected_digest not in message
        assert BODY.decode() not in message
    assert secret_text not in repr(verifier)


def test_standard_webhooks_key_rejects_bad_secret() -> None:
    """A whsec_ secret that is not base64 is refused without echoing it."""
    with pytest.raises(ValueError) as caught:
        StandardWebhooksVerifier("whsec_not*base64*at*all")

    assert "not*base64" not in str(caught.value)


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _hmac_b64(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@pytest.mark.parametrize(
    ("prefix", "encoding", "value"),
    [
        ("", "hex", _hmac_hex("s3cret", BODY)),
        ("sha256=", "hex", "sha256=" + _hmac_hex("s3cret", BODY)),
        ("sha256=", "hex", "sha256=" + _hmac_hex("s3cret", BODY).upper()),
        ("", "base64", _hmac_b64("s3cret", BODY)),
        ("sha256=", "base64", "sha256=" + _hmac_b64("s3cret", BODY)),
    ],
)
def test_hmac_sha256_verifier_accepts_encodings(prefix: str, encoding: str, value: str) -> None:
    """Hex and base64 digests, with and without a prefix, verify against the raw body."""
    options = {"secret": "s3cret", "header": "X-Hub-Signature-256", "prefix": prefix}
    verifier = build_verifier("hmac-sha256", encoding=encoding, **options)

    assert verifier.verify({"x-hub-signature-256": value}, BODY) is None


def test_hmac_sha256_verifier_sign_round_trips() -> None:
    """The verifier's own sign() produces a header value it accepts."""
    verifier = HmacSha256Verifier("s3cret", "X-Signature", prefix="sha256=", encoding="base64")

    assert verifier.verify({"X-Signature": verifier.sign(BODY)}, BODY) is None


def test_hmac_sha256_verifier_rejects_wrong_digest() -> None:
    """A digest made with another secret, or over another body, does not match."""
    verifier = HmacSha256Verifier("s3cret", "X-Hub-Signature-256", prefix="sha256=")

    for value in (_hmac_hex("other", BODY), _hmac_hex("s3cret", BODY + b"!")):
        message = failure(verifier, {"X-Hub-Signature-256": "sha256=" + value})
        assert message == "no signature matched: header 'X-Hub-Signature-256' is wrong"
        assert _hmac_hex("s3cret", BODY) not in message


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "missing header 'X-Hub-Signature-256'"),
        ({"X-Hub-Signature-256": "sha1=abcd"}, "does not start with 'sha256='"),
        ({"X-Hub-Signature-256": "sha256=xyz"}, "the digest is not valid hex"),
    ],
)
def test_hmac_sha256_verifier_names_missing_or_malformed_header(
    headers: dict[str, str], expected: str
) -> None:
    """Missing and malformed headers fail with a message naming the header."""
    verifier = HmacSha256Verifier("s3cret", "X-Hub-Signature-256", prefix="sha256=")

    assert expected in failure(verifier, headers)


def test_hmac_sha256_verifier_repr_masks_secret() -> None:
    """The repr shows the header and encoding but not the secret."""
    text = repr(HmacSha256Verifier("s3cret", "X-Sig"))

    assert "s3cret" not in text
    assert "[secure]" in text


def test_build_verifier_builds_standard_webhooks() -> None:
    """The factory maps 'standard-webhooks' to a StandardWebhooksVerifier."""
    verifier = build_verifier("standard-webhooks", secret=SECRET, tolerance_seconds=60)

    assert isinstance(verifier, StandardWebhooksVerifier)
    assert verifier.tolerance_seconds == 60


def test_build_verifier_suggests_nearest_scheme() -> None:
    """An unknown scheme name fails with the nearest known one suggested."""
    with pytest.raises(ValueError, match="did you mean 'standard-webhooks'"):
        build_verifier("standard-webhook", secret=SECRET)


def test_build_verifier_rejects_unknown_option() -> None:
    """An option the scheme does not take is named, with the ones it does take."""
    with pytest.raises(ValueError, match=r"unknown option 'tolerence'.*secret, tolerance_seconds"):
        build_verifier("standard-webhooks", secret=SECRET, tolerence=5)


def test_delivered_ids_reports_repeat_within_window() -> None:
    """An id seen again within the window is a repeat; a new id is not."""
    ids = DeliveredIds(window_seconds=600, max_entries=10)

    assert ids.seen_before("msg_1", now=0.0) is False
    assert ids.seen_before("msg_1", now=600.0) is True
    assert ids.seen_before("msg_2", now=600.0) is False


def test_delivered_ids_forgets_after_window() -> None:
    """Past the window an id is forgotten, counted as new and recorded afresh."""
    ids = DeliveredIds(window_seconds=600, max_entries=10)
    ids.seen_before("msg_1", now=0.0)

    assert ids.seen_before("msg_1", now=600.5) is False
    assert ids.seen_before("msg_1", now=1200.0) is True
    assert len(ids) == 1


def test_delivered_ids_window_counts_from_first_delivery() -> None:
    """Repeats do not extend an id's stay: the window runs from when it was recorded."""
    ids = DeliveredIds(window_seconds=10, max_entries=10)
    ids.seen_before("msg_1", now=0.0)
    ids.seen_before("msg_1", now=9.0)

    assert ids.seen_before("msg_1", now=10.5) is False


def test_delivered_ids_never_exceeds_max_entries() -> None:
    """Past max_entries the oldest ids are dropped first."""
    ids = DeliveredIds(window_seconds=600, max_entries=3)
    for number in range(10):
        ids.seen_before(f"msg_{number}", now=float(number))
        assert len(ids) <= 3

    assert ids.seen_before("msg_9", now=10.0) is True
    assert ids.seen_before("msg_0", now=10.0) is False


def test_delivered_ids_drops_expired_entries() -> None:
    """Expired ids leave the table even when only other ids are looked up."""
    ids = DeliveredIds(window_seconds=5, max_entries=100)
    for number in range(50):
        ids.seen_before(f"msg_{number}", now=0.0)

    ids.seen_before("late", now=6.0)

    assert len(ids) == 1
