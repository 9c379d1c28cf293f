"""TwiML answers for the voice webhook, built with ElementTree so caller-influenced text is escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

TWIML_MEDIA_TYPE = "text/xml"


@dataclass(frozen=True, slots=True)
class Voice:
    language: str = "en-US"
    voice: str | None = None


def _say(parent: ET.Element, text: str, voice: Voice) -> None:
    el = ET.SubElement(parent, "Say", language=voice.language)
    if voice.voice:
        el.set("voice", voice.voice)
    el.text = text


def _render(root: ET.Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


def gather_menu(prompt: str, *, action_url: str, no_input_url: str, voice: Voice) -> str:
    """Ask one DTMF digit; without input Twilio falls through to the redirect (decide without digits)."""
    root = ET.Element("Response")
    gather = ET.SubElement(root, "Gather", input="dtmf", numDigits="1", timeout="5", action=action_url, method="POST")
    _say(gather, prompt, voice)
    ET.SubElement(root, "Redirect", method="POST").text = no_input_url
    return _render(root)


def enqueue(message: str, *, queue: str, action_url: str, wait_url: str | None, voice: Voice) -> str:
    """A short message, then hold in the site's queue until an agent takes the call."""
    root = ET.Element("Response")
    _say(root, message, voice)
    el = ET.SubElement(root, "Enqueue", action=action_url, method="POST")
    if wait_url:
        el.set("waitUrl", wait_url)
    el.text = queue
    return _render(root)


def say_and_hang_up(message: str, *, voice: Voice) -> str:
    root = ET.Element("Response")
    _say(root, message, voice)
    ET.SubElement(root, "Hangup")
    return _render(root)


def hang_up() -> str:
    root = ET.Element("Response")
    ET.SubElement(root, "Hangup")
    return _render(root)


def empty() -> str:
    return _render(ET.Element("Response"))
