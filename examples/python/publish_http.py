#!/usr/bin/env python3
"""Publish a notification over plain HTTP, with the standard library alone: no WebSocket,
no dependency. What a web app or a task queue worker writes.

    python publish_http.py <uuid> "message" [--url http://127.0.0.1:8765] [--json]

Exits 0 when delivered, 6 when nobody is connected now and the relay keeps the message
for the next registration, 3 when nobody is registered and nothing was kept, 1 when the
relay refuses it (the exit codes of notify-relay-client).
"""
import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request


def publish(base_url: str, key: str, message, timeout: float = 10.0) -> dict:
    """POST /publish/<key> and return the relay's answer, e.g.
    {"ok": true, "delivered": 1, "buffered": false, "cursor": "..."}.
    A str is sent as text; anything else as JSON."""
    if isinstance(message, str):
        body, content_type = message.encode(), "text/plain; charset=utf-8"
    else:
        body, content_type = json.dumps(message).encode(), "application/json"
    url = f"{base_url.rstrip('/')}/publish/{urllib.parse.quote(key, safe='')}"
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        # 400, 413, 415, 503 answer {"ok": false, "error": "..."} too.
        return json.load(error)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uuid")
    parser.add_argument("message")
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--json", action="store_true", help="send MESSAGE as a JSON value")
    args = parser.parse_args()
    message = json.loads(args.message) if args.json else args.message
    reply = publish(args.url, args.uuid, message)
    if not reply.get("ok"):
        print(f"rejected: {reply.get('error')}", file=sys.stderr)
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
