"""Webhook signatures. Pure functions; the clock is a parameter.

* **Generic JSON webhooks** (Stripe-style): ``X-Switchboard-Timestamp: <unix seconds>`` and
  ``X-Switchboard-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``. The timestamp is
  inside the MAC, so a captured request cannot be replayed once it is older than the tolerance window;
  within the window a replay is a duplicate and the idempotency store absorbs it. Several ``v1=``
  values (comma separated) are accepted so a secret can be rotated without downtime.
* **Twilio** (``X-Twilio-Signature``): base64 HMAC-SHA1 (or SHA-256 for SharedKeys) of the full URL
  Twilio requested followed by every POST parameter name+value, names sorted, values sorted. Twilio
  itself is inconsistent about an explicit default port, so both forms are tried, as its own
  ``RequestValidator`` does. Behind a proxy the URL must be rebuilt from the public base URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
SIGNATURE_HEADER = "X-Switchboard-Signature"
SOURCE_HEADER = "X-Switchboard-Source"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
TWILIO_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


class SignatureFailure(StrEnum):
    """Why a signature was refused (the metric label and the log field; never shown in detail)."""

    MISSING = "signature_missing"
    MALFORMED = "signature_malformed"
    MISMATCH = "signature_mismatch"
    EXPIRED = "replay"  # timestamp outside the tolerance window
    UNKNOWN_SOURCE = "unknown_source"


def sign_generic(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Switchboard-Signature`` value a sender puts on ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify_generic(
    secret: bytes,
    *,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    now: float,
    tolerance_seconds: float,
) -> SignatureFailure | None:
    """None when the request is authentic and fresh, else the reason it is not."""
    if not timestamp_header or not signature_header:
        return SignatureFailure.MISSING
    ts_text = timestamp_header.strip()
    if not ts_text.isascii() or not ts_text.isdigit() or len(ts_text) > 12:
        return SignatureFailure.MALFORMED
    timestamp = int(ts_text)
    candidates = [part.strip()[3:] for part in signature_header.split(",") if part.strip().startswith("v1=")]
    if not candidates:
        return SignatureFailure.MALFORMED
    expected = sign_generic(secret, timestamp, body)[3:]
    # Check the MAC before the clock: a forged request learns nothing about our time window.
    if not any(hmac.compare_digest(expected.encode(), c.encode("utf-8", "replace")) for c in candidates):
        return SignatureFailure.MISMATCH
    if abs(now - timestamp) > tolerance_seconds:
        return SignatureFailure.EXPIRED
    return None


def twilio_signature(
    secret: bytes, url: str, params: Iterable[tuple[str, str]], *, algorithm: str = "HMAC_SHA1"
) -> str:
    """Twilio's signature of a form POST to ``url`` (names sorted, each name's values sorted)."""
    digest = hashlib.sha256 if algorithm.upper() == "HMAC_SHA256" else hashlib.sha1
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    return base64.b64encode(hmac.new(secret, data.encode("utf-8"), digest).digest()).decode()


def _port_variants(url: str) -> tuple[str, str]:
    """(url without port, url with the scheme's default port made explicit), as Twilio's validator."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        without = urlunsplit(parts._replace(netloc=_netloc(parts, host)))
        return without, url
    port = 443 if parts.scheme == "https" else 80
    with_port = urlunsplit(parts._replace(netloc=_netloc(parts, host) + f":{port}"))
    return url, with_port


def _netloc(parts: object, host: str) -> str:
    userinfo = getattr(parts, "netloc", "").rpartition("@")
    return f"{userinfo[0]}@{host}" if userinfo[1] else host


def twilio_algorithm(settings_header: str | None) -> tuple[str, str | None]:
    """(algorithm, SharedKey id) named in ``X-Twilio-Webhooks-Signature-Settings``; legacy: SHA1."""
    algorithm, key_id = "HMAC_SHA1", None
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            algorithm = value.strip().upper()
        elif sep and name.strip() == "key" and value.strip():
            key_id = value.strip()
    return algorithm, key_id


def verify_twilio(
    *,
    auth_token: bytes | None,
    shared_keys: Mapping[str, bytes],
    url: str,
    params: Iterable[tuple[str, str]],
    signature: str | None,
    settings_header: str | None,
) -> SignatureFailure | None:
    if not signature:
        return SignatureFailure.MISSING
    algorithm, key_id = twilio_algorithm(settings_header)
    if algorithm not in ("HMAC_SHA1", "HMAC_SHA256"):
        return SignatureFailure.MALFORMED
    secret = shared_keys.get(key_id) if key_id is not None else auth_token
    if secret is None:
        return SignatureFailure.UNKNOWN_SOURCE
    pairs = list(params)
    given = signature.strip().encode("utf-8", "replace")
    for candidate_url in _port_variants(url):
        expected = twilio_signature(secret, candidate_url, pairs, algorithm=algorithm)
        if hmac.compare_digest(expected.encode(), given):
            return None
    return SignatureFailure.MISMATCH
