#!/usr/bin/env python3
"""Send one notification to a UUID, the way clients of the original server do.

    python producer.py <recipient_uuid> "message" [--url ws://127.0.0.1:8765/] [--confirm]

Without --confirm this is exactly the original client.py: connect, read the greeting,
send {"recipient_uuid": ..., "message": ...}. With --confirm it adds the relay's opt-in
"id", waits for the reply and exits 0 when delivered, 6 when nobody is connected and
the relay keeps the message for the next registration, 3 when nobody is registered and
nothing was kept (the exit codes of notify-relay-client).
"""
import argparse
import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipient_uuid")
    parser.add_argument("message")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/")
    parser.add_argument("--confirm", action="store_true", help="wait for the delivery count")
    args = parser.parse_args()

    async with connect(args.url) as ws:
        await ws.recv()  # the greeting
        frame = {"recipient_uuid": args.recipient_uuid, "message": args.message}
        if not args.confirm:
            await ws.send(json.dumps(frame))
            return 0
        frame["id"] = 1
        await ws.send(json.dumps(frame))
        reply = json.loads(await ws.recv())
        if not reply.get("ok"):
            print(f"rejected: {reply.get('error')}", file=sys.stderr)
            return 1
        delivered = reply.get("delivered", 0)
        if delivered == 0 and reply.get("buffered"):
            print("nobody is connected now: kept for the next registration")
            return 6
        print(f"delivered to {delivered} connection(s)")
        return 0 if delivered > 0 else 3


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
