#!/usr/bin/env python3
"""Report a job's progress to a UUID the way a GPU worker or task queue does: a tick every
so often, then the result. Each tick carries "collapse": "progress", so the relay keeps only
the newest tick for a page that (re)connects later: it gets the current progress and the
result, not a pile of stale ticks.

    python progress.py <uuid> [--url ws://127.0.0.1:8765/] [--ticks 100] [--interval 0.1]
"""
import argparse
import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uuid")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/")
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between ticks")
    args = parser.parse_args()

    async with connect(args.url) as ws:
        await ws.recv()  # the greeting
        for tick in range(1, args.ticks + 1):
            await ws.send(json.dumps({
                "recipient_uuid": args.uuid,
                "message": {"progress": round(tick / args.ticks, 4)},
                "collapse": "progress",
            }))
            await asyncio.sleep(args.interval)
        # The result is a plain message: kept until read, never collapsed away.
        await ws.send(json.dumps({
            "id": "result", "recipient_uuid": args.uuid,
            "message": {"done": True, "ticks": args.ticks},
        }))
        async for frame in ws:  # wait for the reply: the relay has everything
            reply = json.loads(frame)
            if reply.get("id") == "result":
                print(json.dumps(reply))
                return 0 if reply.get("ok") else 1
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
