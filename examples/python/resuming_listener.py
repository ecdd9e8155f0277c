#!/usr/bin/env python3
"""Receive the notifications sent to a UUID and lose none across reconnects: register
with "since" (the cursor of the last message received), so after a drop or a relay
restart the relay hands over what was missed, in order, before live messages.

    python resuming_listener.py <uuid> [--url ws://127.0.0.1:8765/] [--since earliest]
                                       [--count N]

Prints each message on its own line; a gap (history the relay no longer had) goes to
stderr. Keep the cursor somewhere durable (a file, a database) to resume across process
restarts too.
"""
import argparse
import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uuid")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/")
    parser.add_argument("--since", default="earliest", help="earliest, latest or a cursor")
    parser.add_argument("--count", type=int, default=0, help="exit after N messages")
    args = parser.parse_args()

    since = args.since
    received = 0
    # Iterating over connect() reconnects with exponential backoff after a drop.
    async for ws in connect(args.url):
        try:
            await ws.recv()  # the greeting
            await ws.send(json.dumps({
                "id": "register", "recipient_uuid": args.uuid,
                "message": "connected", "since": since,
            }))
            async for frame in ws:
                envelope = json.loads(frame)
                if envelope.get("id") == "register":
                    print(f"registered; {envelope.get('replayed', 0)} missed message(s) follow",
                          file=sys.stderr, flush=True)
                    continue
                if envelope.get("gap"):
                    print("gap: the relay no longer had some messages", file=sys.stderr, flush=True)
                    since = envelope["cursor"]
                    continue
                message = envelope["message"]
                print(message if isinstance(message, str) else json.dumps(message), flush=True)
                if "cursor" in envelope:  # ephemeral messages have none
                    since = envelope["cursor"]
                received += 1
                if args.count and received >= args.count:
                    return 0
        except ConnectionClosed:
            print("connection lost; resuming", file=sys.stderr, flush=True)
            continue
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
