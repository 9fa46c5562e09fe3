"""A small real backend for the hook tests: ``python tests/hookbackend.py PORT SECRET``.

It checks every request's signature (401 if bad), decides by simple rules, and keeps
a log (``GET /log``) of what it got: the hook, the body, whether the signature was good,
and the client port (connection reuse). ``/slow/*`` answers after 5 s, ``/fail/*`` with
500, ``/garbage/*`` with a body that is not a decision.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
from aiohttp import web

from roost.hooks import HEADER, verify

LOG: list[dict[str, Any]] = []


async def hook(request: web.Request) -> web.Response:
    raw = await request.read()
    good = verify(SECRET, request.headers.get(HEADER, ""), raw)
    body = orjson.loads(raw)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    LOG.append({"path": request.path, "hook": body.get("hook"), "signed": good,
                "body": body, "port": peer[1] if peer else None})  # fmt: skip
    if not good:
        return web.Response(status=401, text="bad signature")
    kind = request.match_info["kind"]
    if request.path.startswith("/slow/"):
        await asyncio.sleep(5)
    if request.path.startswith("/fail/"):
        return web.Response(status=500, text="boom")
    if request.path.startswith("/garbage/"):
        return web.Response(text="<html>not json</html>")
    return web.json_response(decide(kind, body), dumps=lambda v: orjson.dumps(v).decode())


def decide(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    if kind == "connect":
        name = body["params"].get("user", "")
        if name == "mallory":
            return {"allow": False, "reason": "banned"}
        if name == "vip":
            return {"allow": True, "assigns": {"role": "vip"}}
        return {"allow": True}
    if kind == "join":
        if body["topic"] == "rooms:staff" and body["user"].get("role") != "vip":
            return {"allow": False, "reason": "members only"}
        if body["topic"] == "rooms:loud":
            user = (body["payload"] or {}).get("user", "")
            return {"allow": True, "payload": {"user": user.upper()}}
        return {"allow": True}
    if kind == "publish":
        text = (body["payload"] or {}).get("body", "")
        if "spam" in text:
            return {"allow": False, "reason": {"reason": "no spam", "rule": 7}}
        if "darn" in text:
            return {
                "allow": True,
                "payload": {**body["payload"], "body": text.replace("darn", "d**n")},
            }
        return {"allow": True}
    return {"allow": False, "reason": f"unknown hook {kind}"}


async def log(request: web.Request) -> web.Response:
    return web.json_response(LOG)


async def reset(request: web.Request) -> web.Response:
    LOG.clear()
    return web.json_response({})


def main() -> None:
    app = web.Application()
    app.router.add_post("/{kind}", hook)
    app.router.add_post("/{mode}/{kind}", hook)
    app.router.add_get("/log", log)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


SECRET = sys.argv[2].encode() if len(sys.argv) > 2 else b""

if __name__ == "__main__":
    main()
