"""notify_relay against the real relay: publish outcomes and refusals (to the relay's
http:// or ws:// URL, to no relay, to a server that hangs up), listen in order with
cursors, through a relay restart (a gap, then live messages, nothing doubled), and
cancellation that closes cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import AsyncIterator, List

import pytest

import notify_relay
from conftest import (
    DEADLINE_S,
    PUBLISH_TOKEN,
    Relay,
    eventually,
    free_port,
    registration_token,
)

CLIENT_CLOSES = 'notify_relay_connections_closed_total{reason="client_close"}'


async def next_message(messages: AsyncIterator[notify_relay.Message]) -> notify_relay.Message:
    return await asyncio.wait_for(messages.__anext__(), DEADLINE_S)


async def until_connected(relay: Relay, key: str, count: int = 1) -> None:
    """Waits (without blocking the loop) until ``count`` connections are under ``key``."""
    await asyncio.to_thread(eventually, f"{count} connection(s) on {key}",
                            lambda: relay.connections(key) == count)


def test_publish_outcomes(relay: Relay) -> None:
    kept = notify_relay.publish(relay.http, "job-1", "50%", token="unused-until-access-control")
    assert kept["ok"] is True
    assert kept["delivered"] == 0
    assert kept["buffered"] is True
    assert kept["cursor"]

    async def delivered() -> None:
        messages = notify_relay.listen(relay.ws, "job-1", since="earliest")
        first = await next_message(messages)
        assert (first.data, first.cursor, first.gap) == ("50%", kept["cursor"], False)
        reply = await asyncio.to_thread(notify_relay.publish, relay.http, "job-1", {"done": True})
        assert reply["delivered"] == 1
        assert reply["buffered"] is False
        live = await next_message(messages)
        assert live.data == {"done": True}
        assert live.cursor == reply["cursor"]
        await messages.aclose()

    asyncio.run(delivered())

    with pytest.raises(notify_relay.PublishError) as refused:
        notify_relay.publish(relay.http, "k" * 300, "a key over --max-key-length")
    assert refused.value.status == 400
    assert refused.value.error == "recipient_uuid is too long"
    assert "too long" in str(refused.value)


def test_publish_to_no_relay_says_where_it_could_not_connect() -> None:
    port = free_port()
    for url, posted in [
        (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/publish/k"),
        (f"ws://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/publish/k"),
        (f"wss://127.0.0.1:{port}/", f"https://127.0.0.1:{port}/publish/k"),
    ]:
        with pytest.raises(notify_relay.PublishError) as unreachable:
            notify_relay.publish(url, "k", "nobody listens")
        assert str(unreachable.value) == f"cannot connect to {posted}: connection refused"
        assert unreachable.value.status is None
        assert unreachable.value.url == posted


def test_publish_to_a_server_that_never_answers_says_so() -> None:
    """Something on the port takes the request and hangs up without an answer (not the
    relay, or one that died mid-request): "no answer from", not "cannot connect to"."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(DEADLINE_S)

        def take_the_request_and_hang_up() -> None:
            connection, _ = server.accept()
            with connection:
                received = b""
                # The whole request (the body is last), so the client's writes succeed.
                while b"nobody answers" not in received:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return
                    received += chunk

        peer = threading.Thread(target=take_the_request_and_hang_up)
        peer.start()
        try:
            with pytest.raises(notify_relay.PublishError) as unanswered:
                notify_relay.publish(f"http://127.0.0.1:{port}", "k", "nobody answers")
        finally:
            peer.join(DEADLINE_S)
    posted = f"http://127.0.0.1:{port}/publish/k"
    assert str(unanswered.value).startswith(f"no answer from {posted}: "), str(unanswered.value)
    assert unanswered.value.status is None
    assert unanswered.value.url == posted


def test_publish_to_the_relays_websocket_url(relay: Relay) -> None:
    """The URL ``listen`` takes (ws://) publishes too: it is the relay's http:// port."""
    reply = notify_relay.publish(relay.ws, "job-ws", "through ws://")
    assert (reply["ok"], reply["delivered"], reply["buffered"]) == (True, 0, True)
    with pytest.raises(ValueError, match="not a relay URL"):
        notify_relay.publish(f"127.0.0.1:{relay.port}", "job-ws", "no scheme")


def test_listen_resumes_through_a_relay_restart(relay: Relay) -> None:
    async def scenario() -> List[notify_relay.Message]:
        messages = notify_relay.listen(relay.ws, "job-2", since="earliest")
        seen: List[notify_relay.Message] = []
        first = asyncio.ensure_future(next_message(messages))
        await until_connected(relay, "job-2")
        await asyncio.to_thread(notify_relay.publish, relay.http, "job-2", "before")
        seen.append(await first)
        await asyncio.to_thread(relay.stop)
        await asyncio.to_thread(relay.start)
        gap = await next_message(messages)
        seen.append(gap)
        reply = await asyncio.to_thread(notify_relay.publish, relay.http, "job-2", "after")
        assert reply["delivered"] == 1, "the listener is back on the new relay"
        seen.append(await next_message(messages))
        await messages.aclose()
        return seen

    before, gap, after = asyncio.run(scenario())
    assert (before.data, before.gap) == ("before", False)
    assert gap.gap is True and gap.data is None and gap.cursor
    assert (after.data, after.gap) == ("after", False)
    assert len({before.cursor, gap.cursor, after.cursor}) == 3, "nothing handed over twice"


def test_listen_resumes_from_a_stored_cursor(relay: Relay) -> None:
    first = notify_relay.publish(relay.http, "job-3", "one")
    notify_relay.publish(relay.http, "job-3", "two")
    notify_relay.publish(relay.http, "job-3", "three")

    async def resume() -> List[str]:
        messages = notify_relay.listen(relay.ws, "job-3", since=first["cursor"])
        got = [(await next_message(messages)).data for _ in range(2)]
        await messages.aclose()
        return got

    assert asyncio.run(resume()) == ["two", "three"]


def test_cancellation_closes_cleanly(relay: Relay) -> None:
    closes_before = relay.metric(CLIENT_CLOSES)

    async def listen_then_cancel() -> None:
        async def consume() -> None:
            async for _ in notify_relay.listen(relay.ws, "job-4", since="latest"):
                pass

        task = asyncio.ensure_future(consume())
        await until_connected(relay, "job-4")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(listen_then_cancel())
    eventually("the relay counts a client close", lambda: relay.metric(CLIENT_CLOSES) == closes_before + 1)
    assert relay.connections("job-4") == 0


def test_tokens_against_a_relay_with_access_control(secured_relay: Relay) -> None:
    relay = secured_relay
    for token in (None, "wrong publisher token"):
        with pytest.raises(notify_relay.PublishError) as refused:
            notify_relay.publish(relay.http, "job-4", "forged", token=token)
        assert refused.value.status == 401
        assert refused.value.error == "unauthorized"

    async def refused_listen(token: "str | None") -> None:
        messages = notify_relay.listen(relay.ws, "job-4", token=token)
        with pytest.raises(notify_relay.RegistrationRefused) as refused:
            await next_message(messages)
        assert refused.value.error == "unauthorized"

    asyncio.run(refused_listen(None))
    asyncio.run(refused_listen(registration_token("another-job")))
    asyncio.run(refused_listen(registration_token("job-4", secret="not the relay's")))

    token = registration_token("job-4")

    async def listened() -> None:
        messages = notify_relay.listen(relay.ws, "job-4", since="latest", token=token)
        first = asyncio.ensure_future(next_message(messages))
        await asyncio.to_thread(
            eventually, "the listener registered",
            lambda: relay.connections("job-4", token) == 1)
        reply = await asyncio.to_thread(
            notify_relay.publish, relay.http, "job-4", "allowed", PUBLISH_TOKEN)
        assert reply["delivered"] == 1
        assert (await first).data == "allowed"
        await messages.aclose()

    asyncio.run(listened())


def test_watch_yields_the_state_then_every_change(relay: Relay) -> None:
    async def watched() -> None:
        states = notify_relay.watch(relay.ws, ["py-watch", "py-other"])
        first = [await next_presence(states), await next_presence(states)]
        assert first == [
            notify_relay.Presence("py-watch", False, 0),
            notify_relay.Presence("py-other", False, 0),
        ]
        messages = notify_relay.listen(relay.ws, "py-watch")
        listening = asyncio.ensure_future(messages.__anext__())
        assert await next_presence(states) == notify_relay.Presence("py-watch", True, 1)
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        assert await next_presence(states) == notify_relay.Presence("py-watch", False, 0)
        await states.aclose()

    asyncio.run(watched())


async def next_presence(
    states: AsyncIterator[notify_relay.Presence],
) -> notify_relay.Presence:
    return await asyncio.wait_for(states.__anext__(), DEADLINE_S)
