"""Python client of notify-relay: publish over HTTP, listen over WebSocket with resume.

    import notify_relay

    reply = notify_relay.publish("http://127.0.0.1:8765", key, "50% done")  # or ws://…/
    async for m in notify_relay.listen("ws://127.0.0.1:8765/", key, since="earliest"):
        print(m.data, m.cursor, m.gap)
    async for p in notify_relay.watch("ws://127.0.0.1:8765/", [key]):
        print(p.key, p.online, p.connections)

``listen`` registers resumably (``since``), keeps the cursor of every message it yields,
reconnects with capped exponential backoff and jitter after any drop, resumes from the
last cursor (reporting a gap when the relay no longer had some history) and never yields
a message twice. Cancelling the task that iterates it closes the connection cleanly
(Close 1000). The contract is docs/PROTOCOL.md of notify-relay.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, List, Optional

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

__all__ = [
    "Message",
    "Presence",
    "PublishError",
    "RegistrationRefused",
    "publish",
    "listen",
    "watch",
]

#: The first reconnect waits about this long (seconds); each further attempt doubles it.
FIRST_RETRY_S = 0.5
#: No reconnect waits longer than this (seconds).
MAX_RETRY_S = 30.0
#: How long the greeting and the registration reply may take (seconds).
REGISTER_TIMEOUT_S = 10.0
#: Largest frame accepted from the relay: its largest message plus the envelope.
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: How many recent cursors are remembered to drop a message yielded already.
SEEN_CURSORS = 1024
#: The registration error of a refused token (access control): not retried.
UNAUTHORIZED = "unauthorized"
#: How long an HTTP publish may take (seconds).
PUBLISH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Message:
    """One thing ``listen`` yields.

    ``data`` is the message: a ``str`` or the JSON value that was published (``None`` on a
    gap). ``cursor`` is its position, to store and pass back as ``since`` (``None`` for an
    ephemeral message, which has none, and with a relay whose streams are off). ``gap`` is
    ``True`` on a gap marker: the relay no longer had the history before ``cursor``.
    """

    data: Any
    cursor: Optional[str]
    gap: bool = False
    ephemeral: bool = False


@dataclass(frozen=True)
class Presence:
    """A key's presence, as a watch yields it."""

    #: The key.
    key: str
    #: Whether any connection is registered under it.
    online: bool
    #: How many connections are registered under it (on every relay).
    connections: int


class PublishError(Exception):
    """The relay refused a publish, or could not be reached.

    ``status`` is the HTTP status (``None`` when there was no answer); ``error`` the
    relay's reason (e.g. ``"recipient_uuid is too long"``) or, with no answer, what failed
    and where (e.g. ``"cannot connect to http://127.0.0.1:8765/publish/k: connection
    refused"``), which is then the whole message; ``reply`` the relay's parsed answer;
    ``url`` the URL posted to.
    """

    def __init__(
        self,
        status: Optional[int],
        error: str,
        reply: Optional[Dict[str, Any]] = None,
        url: Optional[str] = None,
    ):
        if status is None:
            super().__init__(error)
        else:
            super().__init__(f"notify-relay refused the message (HTTP {status}): {error}")
        self.status = status
        self.error = error
        self.reply = reply
        self.url = url


class RegistrationRefused(Exception):
    """The relay refused the token of a ``listen`` (``error`` is ``"unauthorized"``).

    Retrying with the same token cannot help, so ``listen`` raises this instead of
    reconnecting; start a new ``listen`` with a fresh token.
    """

    def __init__(self, error: str):
        super().__init__(f"notify-relay refused the registration: {error}")
        self.error = error


def publish(
    url: str,
    key: str,
    message: Any,
    token: Optional[str] = None,
    *,
    timeout: float = PUBLISH_TIMEOUT_S,
) -> Dict[str, Any]:
    """Publish ``message`` to ``key`` with ``POST <url>/publish/<key>`` (standard library).

    ``url`` is the relay's HTTP URL (``http://127.0.0.1:8765``); its WebSocket URL, the
    one ``listen`` takes, works too (``ws://`` is mapped to ``http://``, ``wss://`` to
    ``https://``). A ``str`` is sent as text, any other value as JSON. ``token`` goes in an
    ``Authorization: Bearer`` header (access control). Returns the relay's answer, e.g.
    ``{"ok": True, "delivered": 1, "buffered": False, "cursor": "..."}``: ``delivered`` is
    how many live connections got it, ``buffered`` whether it was kept for the next
    registration. Raises :class:`PublishError` on an error status or reply, or when the
    relay cannot be reached (``"cannot connect to <URL>: connection refused"``), and
    ``ValueError`` for a URL that is none of these.
    """
    if isinstance(message, str):
        body, content_type = message.encode(), "text/plain; charset=utf-8"
    else:
        body, content_type = json.dumps(message).encode(), "application/json"
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    target = f"{_http_base(url)}/publish/{urllib.parse.quote(key, safe='')}"
    request = urllib.request.Request(target, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode("utf-8", "replace")
    except urllib.error.URLError as error:
        # urllib wraps what failed while connecting and sending the request.
        failure = f"cannot connect to {target}: {_reason(error.reason)}"
        raise PublishError(None, failure, url=target) from error
    except (OSError, http.client.HTTPException) as error:
        # Connected, but no answer came: a timeout, a reset, or not an HTTP server.
        raise PublishError(None, f"no answer from {target}: {_reason(error)}", url=target) from error
    try:
        reply = json.loads(text)
    except ValueError:
        raise PublishError(status, text.strip() or "an answer that is not JSON", url=target) from None
    if status != 200 or not isinstance(reply, dict) or reply.get("ok") is not True:
        reason = reply.get("error", text) if isinstance(reply, dict) else text
        raise PublishError(status, str(reason), reply if isinstance(reply, dict) else None, target)
    return reply


#: The scheme ``publish`` posts with for each scheme a relay URL may have.
_HTTP_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _http_base(url: str) -> str:
    """The relay's HTTP URL without a trailing slash. A ws:// (wss://) URL names the same
    port as http:// (https://), so the URL a caller has for ``listen`` publishes too."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in _HTTP_SCHEMES:
        raise ValueError(f"not a relay URL (http://, https://, ws:// or wss://): {url!r}")
    return f"{_HTTP_SCHEMES[scheme.lower()]}://{rest}".rstrip("/")


def _reason(error: Any) -> str:
    """A short reason for an error: "connection refused", not "[Errno 111] Connection
    refused"."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    text = text or type(error).__name__
    # "Connection refused" reads as part of a sentence; "SSL: ..." keeps its capitals.
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    return text


async def listen(
    url: str,
    key: str,
    since: str = "earliest",
    token: Optional[str] = None,
) -> AsyncIterator[Message]:
    """Yield every message sent to ``key``, resuming across drops, until cancelled.

    ``since`` is where to start: ``"earliest"`` (everything the relay retains),
    ``"latest"`` (only new messages) or a cursor a previous run stored. ``token`` goes in
    the registration frame (access control). After a drop it reconnects with exponential
    backoff and jitter (capped at ``MAX_RETRY_S``) and resumes from the last cursor; a gap
    is yielded as ``Message(data=None, cursor=..., gap=True)``. Cancel the iterating task
    to stop: the connection closes with code 1000. A refused token raises
    :class:`RegistrationRefused`; any other refusal is retried like a drop.
    """
    position = since
    seen: "OrderedDict[str, None]" = OrderedDict()
    attempt = 0
    while True:
        try:
            async with connect(url, max_size=MAX_FRAME_BYTES) as ws:
                enveloped = await _register(ws, key, position, token, attempt)
                attempt = 0
                async for frame in ws:
                    if not isinstance(frame, str):
                        continue
                    if not enveloped:
                        yield Message(data=frame, cursor=None)
                        continue
                    message = _envelope(frame)
                    if message is None:
                        continue
                    if message.cursor is not None and not message.ephemeral:
                        if message.cursor in seen:
                            continue
                        seen[message.cursor] = None
                        if len(seen) > SEEN_CURSORS:
                            seen.popitem(last=False)
                        position = message.cursor
                    yield message
        except (OSError, ConnectionClosed, InvalidHandshake, asyncio.TimeoutError, _Refused):
            pass  # dropped, refused or unreachable: try again after a while
        except InvalidURI:
            raise
        await _back_off(attempt)
        attempt += 1


async def watch(
    url: str,
    keys: "list[str]",
    tokens: Optional[Dict[str, str]] = None,
) -> AsyncIterator[Presence]:
    """Yield each key's presence now, then every change, reconnecting across drops.

    ``tokens`` maps a key to its token (access control). After a drop it reconnects with
    the same backoff as :func:`listen` and watches again; a state equal to the last one
    yielded for its key is not yielded again. A refused token raises
    :class:`RegistrationRefused`. Cancel the iterating task to stop (Close 1000).
    """
    last: Dict[str, Presence] = {}
    attempt = 0
    while True:
        try:
            async with connect(url, max_size=MAX_FRAME_BYTES) as ws:
                await asyncio.wait_for(ws.recv(), REGISTER_TIMEOUT_S)  # the greeting
                early: List[Any] = []
                for key in keys:
                    state = await _watch(ws, key, (tokens or {}).get(key), early)
                    early.append(state)
                attempt = 0

                def changed(state: Optional[Presence]) -> bool:
                    if state is None or last.get(state.key) == state:
                        return False
                    last[state.key] = state
                    return True

                for item in early:
                    state = item if isinstance(item, Presence) else _presence(item)
                    if changed(state):
                        yield state
                async for frame in ws:
                    state = _presence(frame)
                    if changed(state):
                        yield state
        except (OSError, ConnectionClosed, InvalidHandshake, asyncio.TimeoutError, _Refused):
            pass  # dropped, refused or unreachable: try again after a while
        except InvalidURI:
            raise
        await _back_off(attempt)
        attempt += 1


async def _back_off(attempt: int) -> None:
    """Wait before reconnect number ``attempt + 1``: exponential backoff with jitter, so
    a restarted relay is not hit by all its clients at once."""
    ceiling = min(FIRST_RETRY_S * 2 ** min(attempt, 16), MAX_RETRY_S)
    await asyncio.sleep(ceiling * (0.5 + random.random() / 2))


async def _watch(
    ws: ClientConnection, key: str, token: Optional[str], early: "List[Any]"
) -> Presence:
    """Sends a watch for ``key`` and returns the state its reply says; pushes of keys
    watched before that arrive ahead of the reply are appended to ``early``, in order."""
    frame: Dict[str, Any] = {"id": f"watch:{key}", "watch": key}
    if token is not None:
        frame["token"] = token
    await ws.send(json.dumps(frame))
    while True:
        text = await asyncio.wait_for(ws.recv(), REGISTER_TIMEOUT_S)
        try:
            reply = json.loads(text)
        except ValueError:
            continue
        if isinstance(reply, dict) and reply.get("id") == f"watch:{key}":
            break
        early.append(text)
    if reply.get("ok") is not True:
        error = str(reply.get("error"))
        if error == UNAUTHORIZED:
            raise RegistrationRefused(error)
        raise _Refused(error)
    return Presence(key=key, online=bool(reply.get("online")), connections=int(reply.get("connections", 0)))


def _presence(frame: Any) -> Optional[Presence]:
    """The state a presence push carries, or None for any other frame."""
    if not isinstance(frame, str):
        return None
    try:
        value = json.loads(frame)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("presence"), str):
        return None
    return Presence(
        key=value["presence"],
        online=bool(value.get("online")),
        connections=int(value.get("connections", 0)),
    )


class _Refused(Exception):
    """The relay answered the registration with ok: false."""


async def _register(
    ws: ClientConnection, key: str, since: str, token: Optional[str], attempt: int
) -> bool:
    """Registers after the greeting; True when the relay sends envelopes (streams on)."""
    registration_id = f"notify-relay-py-{attempt}"
    await asyncio.wait_for(ws.recv(), REGISTER_TIMEOUT_S)  # the greeting
    frame: Dict[str, Any] = {
        "id": registration_id,
        "recipient_uuid": key,
        "message": "connected",
        "since": since,
    }
    if token is not None:
        frame["token"] = token
    await ws.send(json.dumps(frame))
    reply_text = await asyncio.wait_for(ws.recv(), REGISTER_TIMEOUT_S)
    try:
        reply = json.loads(reply_text)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or reply.get("id") != registration_id:
        raise _Refused(f"unexpected registration answer: {reply_text!r}")
    if reply.get("ok") is not True:
        error = str(reply.get("error"))
        if error == UNAUTHORIZED:
            raise RegistrationRefused(error)
        raise _Refused(error)
    return "replayed" in reply


def _envelope(frame: str) -> Optional[Message]:
    """The message an envelope carries, or None for a frame that is not one."""
    try:
        value = json.loads(frame)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    if value.get("gap") is True and isinstance(value.get("cursor"), str):
        return Message(data=None, cursor=value["cursor"], gap=True)
    if "message" not in value:
        return None
    if value.get("ephemeral") is True:
        return Message(data=value["message"], cursor=None, ephemeral=True)
    if not isinstance(value.get("cursor"), str):
        return None
    return Message(data=value["message"], cursor=value["cursor"])
