#!/usr/bin/env python3
"""Receive the notifications sent to a UUID, the way pages and workers of the original
server do: connect, register with {"recipient_uuid": UUID, "message": "connected"}, print
every message. Reconnects (with backoff) and registers again if the relay restarts.

    python listener.py <uuid> [--url ws://127.0.0.1:8765/] [--count N]
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
    parser.add_argument("--count", type=int, default=0, help="exit after N messages")
    args = parser.parse_args()

    received = 0
    # Iterating over connect() reconnects with exponential backoff after a drop.
    async for ws in connect(args.url):
        try:
            greeting = await ws.recv()
            print(f"connected: {greeting}", file=sys.stderr, flush=True)
            await ws.send(json.dumps({"recipient_uuid": args.uuid, "message": "connected"}))
            async for message in ws:
                print(message, flush=True)
                received += 1
                if args.count and received >= args.count:
                    return 0
        except ConnectionClosed:
            print("connection lost; reconnecting", file=sys.stderr, flush=True)
            continue
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
