#!/usr/bin/env python3
"""Publish a notification over plain HTTP with the notify_relay client library (whose
publish uses the standard library alone: no WebSocket). What a web app or a task queue
worker writes. Install the library with `pip install ./clients/python`.

    python publish_http.py <uuid> "message" [--url http://127.0.0.1:8765] [--json]
                                            [--token TOKEN]

Exits 0 when delivered, 6 when nobody is connected now and the relay keeps the message
for the next registration, 3 when nobody is registered and nothing was kept, 1 when the
relay refuses it (the exit codes of notify-relay-client).
"""
import argparse
import json
import sys

import notify_relay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uuid")
    parser.add_argument("message")
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--json", action="store_true", help="send MESSAGE as a JSON value")
    parser.add_argument("--token", help="access token (Authorization: Bearer)")
    args = parser.parse_args()
    message = json.loads(args.message) if args.json else args.message
    try:
        reply = notify_relay.publish(args.url, args.uuid, message, token=args.token)
    except notify_relay.PublishError as error:
        print(error, file=sys.stderr)
        return 1
    if reply["delivered"] > 0:
        print(f"delivered to {reply['delivered']} connection(s)")
        return 0
    if reply.get("buffered"):
        print("nobody is connected now: kept for the next registration")
        return 6
    print("nobody is registered: the message reached no one")
    return 3


if __name__ == "__main__":
    sys.exit(main())
