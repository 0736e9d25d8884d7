"""Who the end user behind an inference or a judgment is: the compiler counts feedback by voice.

In order: the body's `user` (OpenAI's original field), its `safety_identifier` (OpenAI's
replacement of `user` for telling end users apart; `prompt_cache_key`, the other replacement, is
a cache bucket that many users may share, so it is never read as a user), the `X-User-Id` header.
Feedback sent from a browser with a publishable key and none of these is attributed to its client
address, so that an app that sends no ids still has more than one voice.

The address is stored only as a keyed hash (HMAC-SHA256 with a random key kept in the ledger): an
address is personal data, and a voice is shown in round reports, the console, exports and the
compiler's prompts. A plain hash would not do: the IPv4 space is small enough to hash in full, so
anyone who sees the value could recover the address; without the key they cannot. An IPv6 client
is hashed by its /64, the block one household or phone keeps while privacy extensions rotate the
rest, so one person stays one voice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequest
from .keys import fingerprint

if TYPE_CHECKING:  # the ledger calls `attribute`: no import of it at run time
    from .ledger.records import FeedbackEvent

USER_FIELDS = ("user", "safety_identifier")
USER_HEADER = "x-user-id"
MAX_USER = 256
ADDRESS_PREFIX = "addr:"  # a user id made from a hashed client address
OWNER_PREFIX = "pk:"  # the publishable key that created a feedback row, by fingerprint


def request_user(body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """The end user of an inference (hot path: a few lookups, nothing allocated)."""
    user = body.get("user")
    if isinstance(user, str) and user:
        return user
    user = body.get("safety_identifier")
    if isinstance(user, str) and user:
        return user
    return headers.get(USER_HEADER) or None


def feedback_user(body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """The end user a judgment names, checked: ids are stored and shown, so they stay short strings."""
    for field in USER_FIELDS:
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_USER:
            raise InvalidRequest(f"'{field}' must be a string of at most {MAX_USER} characters", param=field)
        if value:
            return value
    header = headers.get(USER_HEADER)
    if header and len(header) > MAX_USER:
        raise InvalidRequest(f"X-User-Id must be at most {MAX_USER} characters", param="X-User-Id")
    return header or None


def address_block(host: str) -> str:
    """What identifies one client: an IPv4 address, an IPv6 /64; anything else (a socket name) as is."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def address_user(host: str, key: bytes) -> str:
    """`addr:` and 24 hex digits of HMAC-SHA256(key, address block): stable, not reversible without the key."""
    digest = hmac.new(key, address_block(host).encode(), hashlib.sha256).hexdigest()
    return ADDRESS_PREFIX + digest[:24]


def key_owner(key: str) -> str:
    """The owner stored with feedback a publishable key creates: its fingerprint, never the key."""
    return OWNER_PREFIX + fingerprint(key)


def attribute(event: FeedbackEvent) -> FeedbackEvent:
    """The event with the judge's voice on its inference, where the compiler reads it
    (`metadata["user"]`): a user id sent with the feedback wins (whoever judged is the voice),
    then the inference's own user or session, then the feedback's hashed address."""
    user = event.feedback.user_id
    meta = event.inference.metadata or {}
    if not user or meta.get("user") == user:
        return event
    if user.startswith(ADDRESS_PREFIX) and (meta.get("user") or meta.get("session")):
        return event
    new_meta = {**meta, "user": user}
    if meta.get("user"):
        new_meta["inference_user"] = meta["user"]
    return dataclasses.replace(event, inference=dataclasses.replace(event.inference, metadata=new_meta))
