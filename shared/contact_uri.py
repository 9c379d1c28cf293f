"""How an agent is reached on a channel: ``client:<identity>``, ``sip:user@host`` or an E.164 number.

Validated once at the edge (the router's agent API) so a connector can dial the value as it is: a bad
address found only when a caller is waiting would cost that caller. :func:`kind_of` tells a connector
which dial noun to use (Twilio ``<Client>``, ``<Sip>`` or ``<Number>``).
"""

from __future__ import annotations

import re
from enum import StrEnum

import phonenumbers

# Twilio Client identities: letters, digits, underscore (and the dot/dash/@ many deployments use).
_CLIENT = re.compile(r"^client:[A-Za-z0-9_.@-]{1,121}$")
# sip:user@host[:port][;params] (sips too); the user part is optional in RFC 3261 but a PBX needs one.
_SIP = re.compile(
    r"^sips?:[A-Za-z0-9_.!~*'()&=+$,;?/%-]{1,64}@[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(;[A-Za-z0-9_.=%-]{1,100})*$"
)


class UriKind(StrEnum):
    CLIENT = "client"
    SIP = "sip"
    NUMBER = "number"


def normalise_contact_uri(value: str) -> str:
    """The address as stored and dialled, or ``ValueError`` with a message saying what is accepted."""
    text = value.strip()
    if text.startswith("client:"):
        if not _CLIENT.match(text):
            raise ValueError("client identity must be 1-121 letters, digits or _ . @ - (e.g. client:alice)")
        return text
    if text.startswith(("sip:", "sips:")):
        if not _SIP.match(text):
            raise ValueError("SIP URI must look like sip:user@host[:port] (e.g. sip:alice@pbx.example.com)")
        return text
    if text.startswith("+"):
        try:
            number = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            raise ValueError("not a phone number in E.164 format (+<country><number>)") from None
        if not phonenumbers.is_valid_number(number):
            raise ValueError("not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise ValueError("contact_uri must be client:<identity>, sip:user@host or an E.164 number (+<country><number>)")


def kind_of(uri: str) -> UriKind:
    if uri.startswith("client:"):
        return UriKind.CLIENT
    if uri.startswith(("sip:", "sips:")):
        return UriKind.SIP
    return UriKind.NUMBER
