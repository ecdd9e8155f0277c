#!/usr/bin/env python3
"""Receive the notifications sent to a UUID and lose none across reconnects, with the
notify_relay client library (`pip install ./clients/python`): it registers with "since"
(the cursor of the last message received), so after a drop or a relay restart the relay
hands over what was missed, in order, before live messages; it reconnects by itself.

    python resuming_listener.py <uuid> [--url ws://127.0.0.1:8765/] [--since earliest]
                                       [--count N] [--token TOKEN]

Prints each message on its own line; a gap (history the relay no longer had) goes to
stderr. Keep m.cursor somewhere durable (a file, a database) and pass it as --since to
resume across process restarts too.
"""
import argparse
import asyncio
import json
import sys

import notify_relay


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uuid")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/")
    parser.add_argument("--since", default="earliest", help="earliest, latest or a cursor")
    parser.add_argument("--count", type=int, default=0, help="exit after N messages")
    parser.add_argument("--token", help="access token (sent with the registration)")
    args = parser.parse_args()

    received = 0
    async for m in notify_relay.listen(args.url, args.uuid, since=args.since, token=args.token):
        if m.gap:
            print("gap: the relay no longer had some messages", file=sys.stderr, flush=True)
            continue
        print(m.data if isinstance(m.data, str) else json.dumps(m.data), flush=True)
        received += 1
        if args.count and received >= args.count:
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
