#!/usr/bin/env python3
"""The original Python "Notification Center" server, as a benchmark peer.

notify-relay replaces a server written on Python `websockets`. This file behaves as that
server did (docs/PROTOCOL.md, "Compatible behaviour"), so that bench/compare.py can
measure both with the same load generator:

- every connection gets the greeting, then is known under a temporary key `tmp_<uuid4>`;
- `{"recipient_uuid": K, "message": "connected"}` registers it under K; one connection per
  key: a later registration of K replaces the earlier one;
- any other frame with a `recipient_uuid` sends its `message` to K's connection, if any;
- anything else (plain text, bad JSON) is logged and ignored;
- a Ping every 60 s, closed when its Pong is 30 s late; 1 MiB frames (websockets' defaults).

Its defects are kept on purpose, because they are the original's: a non-string message
fails to send (logged), and a closing connection removes the key it registered last even
when another connection has registered that key since.

    python3 bench/peers/original.py [PORT] [--host 127.0.0.1]

Prints `listening on HOST:PORT` on stderr once it accepts; SIGTERM or SIGINT stop it.
"""
import argparse
import asyncio
import json
import logging
import signal
import sys
import uuid

from websockets.asyncio.server import serve

GREETING = "..:: Hello from the Notification Center ::.."
REGISTER_MESSAGE = "connected"

log = logging.getLogger("original")


class Relay:
    """Keys to connections and back, as the original kept them: two plain dicts."""

    def __init__(self):
        self.connection_of = {}  # key -> the websocket registered under it
        self.key_of = {}  # id(websocket) -> its current key

    def register(self, ws, key):
        old = self.key_of.get(id(ws))
        if old is not None and old.startswith("tmp_"):
            # The temporary key goes; a previous real key stays behind (the original's leak).
            self.connection_of.pop(old, None)
        self.connection_of[key] = ws
        self.key_of[id(ws)] = key

    def forget(self, ws):
        key = self.key_of.pop(id(ws), None)
        if key is not None:
            self.connection_of.pop(key, None)

    async def handle(self, ws):
        self.register(ws, f"tmp_{uuid.uuid4()}")
        try:
            await ws.send(GREETING)
            async for frame in ws:
                try:
                    await self.on_frame(ws, frame)
                except Exception as error:  # the original logged and went on
                    log.error("frame failed: %s", error)
        finally:
            self.forget(ws)

    async def on_frame(self, ws, frame):
        if not isinstance(frame, str) or not frame.startswith("{"):
            log.warning("ignored a frame that is not JSON")
            return
        data = json.loads(frame)
        if not isinstance(data, dict):
            log.warning("ignored JSON that is not an object")
            return
        key, message = data.get("recipient_uuid"), data.get("message")
        if not key:
            log.warning("ignored a frame without recipient_uuid")
        elif message == REGISTER_MESSAGE:
            self.register(ws, key)
        elif key in self.connection_of:
            await self.connection_of[key].send(message)
        else:
            log.info("nobody registered under %s", key)


async def main(host, port):
    relay = Relay()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    async with serve(relay.handle, host, port, ping_interval=60, ping_timeout=30) as server:
        bound = server.sockets[0].getsockname()
        print(f"listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", nargs="?", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    asyncio.run(main(args.host, args.port))
