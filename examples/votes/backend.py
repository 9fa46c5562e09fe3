"""The votes example's backend: it decides who may join which poll (roost's --hook-join).

    python examples/votes/backend.py --port 8000 --secret "$HOOK_SECRET"
    roost serve examples.votes.votes:app --hook-join http://127.0.0.1:8000/join \\
        --hook-secret "$HOOK_SECRET"

Your real backend (Django, FastAPI, Rails...) does the same: check the signature over
the raw body, read the JSON, answer ``{"allow": true}`` or ``{"allow": false, "reason"}``.
Here: polls named ``poll:closed-*`` are closed to everyone, and a voter's join payload
is rewritten to carry the name the connect hook gave (``payload`` in the answer).
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from aiohttp import web

from roost.hooks import HEADER, verify


def decide(request: dict[str, Any]) -> dict[str, Any]:
    topic = request["topic"]
    if topic.startswith("poll:closed-"):
        return {"allow": False, "reason": "this poll is closed"}
    payload = request.get("payload") or {}
    return {"allow": True, "payload": {**payload, "voter": request["user"].get("name")}}


def make_app(secret: bytes) -> web.Application:
    async def join(request: web.Request) -> web.Response:
        raw = await request.read()
        if not verify(secret, request.headers.get(HEADER, ""), raw):
            return web.Response(status=401, text="bad signature")
        answer = decide(orjson.loads(raw))
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_post("/join", join)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.secret.encode()), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
