"""The chat page and roost.js in a real browser: Debian's chromium driven by playwright.

Each test opens pages against a real ``roost serve`` subprocess. Chromium is required:
``scripts/test`` installs it and exports ``ROOST_CHROMIUM``; without it these tests fail
(they never skip), because the page is what people see first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    WebSocketRoute,
    expect,
    sync_playwright,
)

from roost.security import tokens

from support import ROOT, ServerProcess, start_redis, start_server

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "docs" / "img" / "chat.png"
PHOENIX_MJS = ROOT / "tests" / "js" / "node_modules" / "phoenix" / "priv" / "static" / "phoenix.mjs"
WAIT_MS = 10_000
XSS_BODIES = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>"]
# the shared server verifies tokens but does not require them: token holders and guests
SECRET = "browser-secret-0123456789"


def chromium_path() -> str:
    path = os.environ.get("ROOST_CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).exists():
        pytest.fail(
            "chromium is required for the browser tests and was not found: install "
            "Debian's package (`apt-get install -y chromium`, which scripts/test does) "
            "or set ROOST_CHROMIUM to its path",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(
        "--secret", SECRET, node="n1", log_dir=tmp_path_factory.mktemp("browser-logs")
    )
    yield srv
    srv.stop()


@dataclass
class Chat:
    """One page in its own browser context (so its own localStorage), with what went wrong."""

    page: Page
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def wait_connected(self) -> None:
        expect(self.page.locator("#status")).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )

    def send(self, text: str) -> None:
        box = self.page.locator("#message")
        box.fill(text)
        box.press("Enter")

    def bodies(self) -> list[str]:
        return self.page.locator("#messages li.msg .body").all_text_contents()

    def lines(self) -> list[str]:
        return [
            " ".join(t.split())
            for t in self.page.locator("#messages li.msg").evaluate_all(
                "items => items.map(li => li.querySelector('.user').textContent + ' ' "
                "+ li.querySelector('.body').textContent)"
            )
        ]


@pytest.fixture
def open_chat(browser: Browser) -> Iterator[Callable[..., Chat]]:
    """Factory: ``open_chat(url, user=None, viewport=...)`` → a loaded Chat page."""
    contexts: list[BrowserContext] = []
    chats: list[Chat] = []

    def make(
        url: str, user: str | None = None, init_script: str | None = None, **context_args: Any
    ) -> Chat:
        context_args.setdefault("viewport", {"width": 900, "height": 600})
        context = browser.new_context(**context_args)
        contexts.append(context)
        if init_script is not None:
            context.add_init_script(init_script)
        if user is not None:
            # as if the person had typed the name on an earlier visit
            context.add_init_script(
                "if (location.protocol.startsWith('http')) "
                f"localStorage.setItem('roost:user', {json.dumps(user)})"
            )
        page = context.new_page()
        chat = Chat(page)
        page.on("pageerror", lambda exc: chat.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: chat.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.on("dialog", lambda dialog: (chat.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("request", lambda req: chat.requests.append(req.url))
        page.goto(url)
        chats.append(chat)
        return chat

    yield make
    for context in contexts:
        context.close()
    # no script errors and no CSP violations on any page a test opened
    problems = [e for chat in chats for e in chat.errors if "WebSocket" not in e]
    assert problems == [], problems


def entered(page: Page, name: str) -> Any:
    return page.locator("#messages li.entered em", has_text=f"[{name} entered]")


# -- the page ----------------------------------------------------------------------------------


def test_page_sends_strict_csp(server: ServerProcess) -> None:
    for path in ("/", "/rooms/lobby"):
        with urllib.request.urlopen(server.url + path, timeout=5) as resp:
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
            body = resp.read().decode()
        assert csp is not None, f"no CSP header on {path}"
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        # nothing inline that the CSP would have to allow
        assert "<script>" not in body and "style=" not in body and "<style" not in body
        assert 'src="/static/chat.js"' in body


def test_two_pages_same_room(server: ServerProcess, open_chat: Callable[..., Chat]) -> None:
    url = f"{server.url}/rooms/two"
    alice = open_chat(url, user="alice")
    alice.wait_connected()
    expect(alice.page.locator("#node")).to_have_text("node n1")
    expect(alice.page.locator("#room-title")).to_have_text("#two")

    bob = open_chat(url, user="bob")
    bob.wait_connected()
    # user:entered, in italics, on the page that was already there
    joined = entered(alice.page, "bob")
    expect(joined).to_be_visible(timeout=WAIT_MS)
    assert joined.evaluate("e => getComputedStyle(e).fontStyle") == "italic"
    expect(entered(bob.page, "bob")).to_be_visible()

    alice.send("hello bob")
    expect(alice.page.locator("#message")).to_have_value("")  # Enter clears the message box
    expect(alice.page.locator("#username")).to_have_value("alice")  # ... and only that
    bob.send("hi alice")
    alice.send("third, in order")
    expected = ["[alice] hello bob", "[bob] hi alice", "[alice] third, in order"]
    for chat in (alice, bob):
        expect(chat.page.locator("#messages li.msg")).to_have_count(3, timeout=WAIT_MS)
        assert chat.lines() == expected
        times = chat.page.locator("#messages li.msg time").all_text_contents()
        assert all(any(ch.isdigit() for ch in t) for t in times), times


def test_username_asked_first_remembered_and_rename(
    server: ServerProcess, open_chat: Callable[..., Chat]
) -> None:
    """A first visit asks for the name before joining anything; a rename in the room is
    announced and moves the online list in place: one name everywhere."""
    url = f"{server.url}/rooms/names"
    watcher = open_chat(url, user="wendy")
    watcher.wait_connected()
    chat = open_chat(url)
    gate = chat.page.locator("#name-gate")
    expect(gate).to_be_visible()
    expect(chat.page.locator("#status")).not_to_have_attribute("data-state", "connected")
    chat.page.locator("#name-go").click()  # nothing typed: asked again, nothing joined
    expect(chat.page.locator("#name-error")).to_have_text("type a name")
    expect(gate).to_be_visible()
    chat.page.locator("#name-input").fill("carol")
    chat.page.locator("#name-input").press("Enter")
    expect(gate).to_be_hidden()
    chat.wait_connected()
    expect(chat.page.locator("#username")).to_have_value("carol")
    expect(entered(watcher.page, "carol")).to_be_visible(timeout=WAIT_MS)
    # nobody ever saw a made-up guest name
    assert watcher.page.locator("#messages li.entered em", has_text="guest-").count() == 0
    chat.send("carol here")
    expect(watcher.page.locator("#messages li.msg")).to_contain_text("[carol] carol here")

    name = chat.page.locator("#username")
    name.fill("carla")
    name.press("Enter")  # commits the name: announced to the room, no rejoin
    for page in (watcher.page, chat.page):
        expect(page.locator("#messages li.renamed em")).to_have_text(
            "[carol] is now [carla]", timeout=WAIT_MS
        )
        expect(page.locator("#online-list li[data-user='carla']")).to_have_count(1)
        expect(page.locator("#online-list li[data-user='carol']")).to_have_count(0)
    chat.send("carla now")
    expect(watcher.page.locator("#messages li.msg").last).to_contain_text("[carla] carla now")
    assert watcher.page.locator("#messages li.entered").count() == 2  # carol once, no rejoin

    chat.page.reload()
    expect(chat.page.locator("#name-gate")).to_be_hidden()
    expect(chat.page.locator("#username")).to_have_value("carla")
    chat.wait_connected()
    expect(entered(watcher.page, "carla")).to_be_visible(timeout=WAIT_MS)


def test_room_switcher(server: ServerProcess, open_chat: Callable[..., Chat]) -> None:
    lobby = open_chat(f"{server.url}/", user="dan")
    lobby.wait_connected()
    expect(lobby.page.locator("#room-title")).to_have_text("#lobby")

    hashed = open_chat(f"{server.url}/#side", user="eve")
    hashed.wait_connected()
    expect(hashed.page.locator("#room-title")).to_have_text("#side")
    hashed.send("only in side")
    expect(hashed.page.locator("#messages li.msg")).to_have_count(1, timeout=WAIT_MS)

    # switch the lobby page into #side with the switcher: URL follows, list starts fresh
    room = lobby.page.locator("#room-input")
    room.fill("side")
    room.press("Enter")
    lobby.page.wait_for_url("**/rooms/side")
    expect(lobby.page.locator("#room-title")).to_have_text("#side")
    lobby.wait_connected()
    lobby.send("dan moved over")
    for chat in (lobby, hashed):
        expect(chat.page.locator("#messages li.msg").last).to_contain_text(
            "[dan] dan moved over", timeout=WAIT_MS
        )
    # the join reply brought #side's history: its message first, once, then the live one
    assert lobby.bodies() == ["only in side", "dan moved over"]

    # back to the lobby through history
    lobby.page.go_back()
    expect(lobby.page.locator("#room-title")).to_have_text("#lobby")
    lobby.wait_connected()

    bad = open_chat(f"{server.url}/#not.valid", user="eve")
    expect(bad.page.locator("#messages li.system")).to_contain_text("not a valid room name")


def test_hostile_bodies_render_as_text(
    server: ServerProcess, open_chat: Callable[..., Chat]
) -> None:
    url = f"{server.url}/rooms/xss"
    victim = open_chat(url, user="victim")
    victim.wait_connected()
    mallory = open_chat(url, user="<b>mallory</b>")
    mallory.wait_connected()
    # a hostile name is text too, in user:entered and in messages
    expect(entered(victim.page, "<b>mallory</b>")).to_be_visible(timeout=WAIT_MS)
    for body in XSS_BODIES:
        mallory.send(body)
    mallory.send("after")  # arrives last: any script from the bodies had its chance to run
    for chat in (mallory, victim):
        expect(chat.page.locator("#messages li.msg")).to_have_count(3, timeout=WAIT_MS)
        assert chat.bodies() == [*XSS_BODIES, "after"]
        assert chat.lines()[0] == "[<b>mallory</b>] <img src=x onerror=alert(1)>"
        injected = chat.page.evaluate(
            "document.querySelectorAll('#messages img, #messages script, #messages b').length"
        )
        assert injected == 0
        assert chat.dialogs == []
        assert not any(u.rstrip("/").endswith("/x") for u in chat.requests), chat.requests


def test_phone_width(server: ServerProcess, open_chat: Callable[..., Chat]) -> None:
    chat = open_chat(
        f"{server.url}/rooms/phone",
        user="pat",
        viewport={"width": 375, "height": 667},
        is_mobile=True,
        has_touch=True,
    )
    chat.wait_connected()
    chat.send("a rather long message that has to wrap on a narrow screen " * 3)
    expect(chat.page.locator("#messages li.msg")).to_have_count(1, timeout=WAIT_MS)
    overflow = chat.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    for sel in ("#message", "#send", "#username", "#status", "#room-input"):
        expect(chat.page.locator(sel)).to_be_in_viewport()


def test_online_list_follows_presence_events(
    server: ServerProcess, open_chat: Callable[..., Chat]
) -> None:
    """The online list is wired to roost.js Presence: frames injected into the live socket."""
    topic = "rooms:who"

    def metas(*refs: str) -> dict[str, Any]:
        return {"metas": [{"phx_ref": ref} for ref in refs]}

    def relay(ws: WebSocketRoute) -> None:
        upstream = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame[2] == topic and frame[3] in ("presence_state", "presence_diff"):
                return  # the server's own presence: only the injected frames reach the page
            ws.send(message)
            if frame[2] == topic and frame[3] == "phx_reply" and frame[0] == frame[1]:
                join_ref = frame[0]
                state = {"zoe": metas("z1"), "yan": metas("y1", "y2"), "<i>x</i>": metas("x1")}
                diff = {"joins": {"amy": metas("a1")}, "leaves": {"zoe": metas("z1")}}
                ws.send(json.dumps([join_ref, None, topic, "presence_state", state]))
                ws.send(json.dumps([None, None, topic, "presence_diff", diff]))

        upstream.on_message(to_page)

    chat = open_chat("about:blank", user="yan")
    chat.page.route_web_socket("**/socket/websocket*", relay)
    chat.page.goto(f"{server.url}/rooms/who")
    chat.wait_connected()
    names = chat.page.locator("#online-list .name")
    expect(names).to_have_text(["<i>x</i>", "amy", "yan"], timeout=WAIT_MS)
    expect(chat.page.locator("#online-count")).to_have_text("3")
    expect(chat.page.locator("#online-list li", has_text="yan")).to_contain_text("\u00d72")
    expect(chat.page.locator("#online-empty")).to_be_hidden()
    assert chat.page.locator("#online-list i").count() == 0


# a token holder, driven through roost.js from another page: joins and says hello
AS_TOKEN_HOLDER = """
async ([token, topic]) => {
  const {Socket} = await import("/static/roost.js")
  const socket = new Socket("/socket", {params: {token}})
  socket.connect()
  const channel = socket.channel(topic, {})
  const answer = push => new Promise((resolve, reject) =>
    push.receive("ok", resolve).receive("error", reject).receive("timeout", reject))
  await answer(channel.join())
  // a client cannot unset (or set) the mark: the server writes it
  await answer(channel.push("new:msg", {body: "signed hello", verified: false}))
  window.holder = socket  // stays in the room
  return true
}
"""


def test_verified_names_marked_and_their_look_alikes_refused(
    server: ServerProcess, open_chat: Callable[..., Chat]
) -> None:
    """A token holder's name carries a check mark; guests are tagged; a guest typing the
    holder's name (in another case) is told it is taken."""
    url = f"{server.url}/rooms/marks"
    pat = open_chat(url, user="pat")
    pat.wait_connected()
    holder = open_chat(f"{server.url}/rooms/marks-host", user="host")
    holder.wait_connected()
    assert holder.page.evaluate(AS_TOKEN_HOLDER, [tokens.mint(SECRET, "al"), "rooms:marks"])

    al_row = pat.page.locator('#online-list li[data-user="al"]')
    expect(al_row).to_have_attribute("data-verified", "true", timeout=WAIT_MS)
    expect(al_row.locator(".mark.verified")).to_have_text("\u2713")
    expect(pat.page.locator('#online-list li[data-user="pat"] .mark.guest')).to_have_text("guest")
    expect(entered(pat.page, "al").locator("xpath=..").locator(".mark.verified")).to_be_visible()
    pat.send("guest hello")
    rows = pat.page.locator("#messages li.msg")
    expect(rows).to_have_count(2, timeout=WAIT_MS)
    expect(rows.filter(has_text="signed hello").locator(".mark.verified")).to_have_text("\u2713")
    expect(rows.filter(has_text="signed hello").locator(".mark.guest")).to_have_count(0)
    expect(rows.filter(has_text="guest hello").locator(".mark.guest")).to_be_visible()
    expect(rows.filter(has_text="guest hello").locator(".mark.verified")).to_have_count(0)
    assert pat.lines() == ["[al] signed hello", "[pat] guest hello"]

    impostor = open_chat(url, user="AL")
    expect(impostor.page.locator("#status")).to_have_text(
        "can't join: name is taken by a verified user", timeout=WAIT_MS
    )
    expect(impostor.page.locator("#messages li.system.error")).to_contain_text("pick another name")
    name = impostor.page.locator("#username")
    name.fill("alf")
    name.press("Enter")  # a new name joins
    impostor.wait_connected()
    expect(pat.page.locator('#online-list li[data-user="alf"] .mark.guest')).to_be_visible(
        timeout=WAIT_MS
    )


# -- reconnect ---------------------------------------------------------------------------------


def test_reconnects_and_rejoins_after_restart(
    open_chat: Callable[..., Chat], tmp_path: Path
) -> None:
    srv = start_server(node="n1", log_dir=tmp_path)
    try:
        url = f"{srv.url}/rooms/restart"
        fay = open_chat(url, user="fay")
        gus = open_chat(url, user="gus")
        fay.wait_connected()
        gus.wait_connected()
        fay.send("before the restart")
        expect(gus.page.locator("#messages li.msg")).to_have_count(1, timeout=WAIT_MS)

        srv.stop()
        for chat in (fay, gus):
            expect(chat.page.locator("#status")).to_have_attribute(
                "data-state", "reconnecting", timeout=WAIT_MS
            )
            expect(chat.page.locator("#status")).to_contain_text("reconnecting")

        srv = start_server(port=srv.port, node="n2", log_dir=tmp_path)
        # the jittered backoff's window doubles from 1 s to 30 s: at worst one full window
        # after the node is back, then one rejoin
        for chat in (fay, gus):
            expect(chat.page.locator("#status")).to_have_attribute(
                "data-state", "connected", timeout=35_000
            )
            expect(chat.page.locator("#node")).to_have_text("node n2")
        gus.send("after the restart")
        for chat in (fay, gus):
            expect(chat.page.locator("#messages li.msg").last).to_contain_text(
                "[gus] after the restart", timeout=WAIT_MS
            )
            assert chat.bodies().count("after the restart") == 1
            # its WebSocket had worked: the outage is not a reason to fall back to long-poll
            assert not any("/socket/longpoll" in url for url in chat.requests)
    finally:
        srv.stop()


# -- roost.js as a library ---------------------------------------------------------------------

ROOST_JS_API = """
async () => {
  const {Socket} = await import("/static/roost.js")
  const out = {}
  // 400 ms: two heartbeats within a second, and room for a loaded machine (a reply missing
  // at the next beat counts as a dead connection and reconnects)
  const socket = new Socket("/socket", {heartbeatIntervalMs: 400})
  const heartbeats = []
  socket.onMessage(m => { if (m.topic === "phoenix") heartbeats.push(m.payload.status) })
  let opens = 0
  socket.onOpen(() => opens++)
  socket.connect()
  const reply = (push) => new Promise(resolve => push
    .receive("ok", r => resolve({ok: r})).receive("error", r => resolve({error: r}))
    .receive("timeout", () => resolve("timeout")))

  const bad = socket.channel("rooms:no spaces!")
  out.badJoin = await new Promise(resolve => bad.join()
    .receive("error", r => { bad.leave(); resolve(r) }).receive("ok", () => resolve("ok?")))

  const ch = socket.channel("rooms:api", () => ({user: "api"}))
  const got = [], also = []
  const ref = ch.on("new:msg", m => got.push(m.body))
  ch.on("new:msg", m => also.push(m.body))
  const joined = reply(ch.join())
  // pushed before the join completed: buffered, then sent
  out.buffered = await reply(ch.push("new:msg", {body: "buffered"}, 30000))
  out.join = await joined
  out.empty = await reply(ch.push("new:msg", {body: "   "}))
  out.long = await reply(ch.push("new:msg", {body: "x".repeat(2001)}))
  ch.off("new:msg", ref)
  await reply(ch.push("new:msg", {body: "second"}))
  while (also.length < 2 || heartbeats.length < 2) await new Promise(r => setTimeout(r, 20))
  out.got = got
  out.also = also
  out.heartbeats = heartbeats.slice(0, 2)
  out.left = await new Promise(resolve => { ch.onClose(() => resolve(ch.state)); ch.leave() })
  out.opens = opens
  out.channels = socket.channels.length
  await new Promise(resolve => socket.disconnect(resolve))
  out.afterDisconnect = socket.connectionState()
  return out
}
"""


def test_roost_js_socket_and_channel(server: ServerProcess, open_chat: Callable[..., Chat]) -> None:
    chat = open_chat(f"{server.url}/rooms/api-host", user="host")
    out = chat.page.evaluate(ROOST_JS_API)
    assert out["badJoin"] == {"reason": "invalid room"}
    assert out["join"]["ok"]["node"] == "n1"
    assert out["join"]["ok"]["history"] == []
    assert set(out["buffered"]["ok"]) == {"id"}
    assert out["empty"] == {"error": {"reason": "empty body"}}
    assert out["long"] == {"error": {"reason": "body too long"}}
    assert out["got"] == ["buffered"]  # off() removed that binding only
    assert out["also"] == ["buffered", "second"]
    assert out["heartbeats"] == ["ok", "ok"]
    assert out["left"] == "closed"
    assert out["opens"] == 1
    assert out["channels"] == 0
    assert out["afterDisconnect"] == "closed"


HEARTBEAT_TIMEOUT = """
async () => {
  const {Socket} = await import("/static/roost.js")
  const socket = new Socket("/socket", {heartbeatIntervalMs: 150})
  const closes = []
  let opens = 0
  socket.onOpen(() => opens++)
  socket.onClose(event => closes.push([event.code, event.reason]))
  socket.connect()
  const channel = socket.channel("rooms:beat", {user: "beat"})
  let joins = 0
  channel.join().receive("ok", () => joins++)
  const deadline = Date.now() + 8000
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
  while ((opens < 2 || joins < 2) && Date.now() < deadline) await sleep(20)
  socket.disconnect()
  return {opens, joins, closes: closes.slice(0, 1)}
}
"""


def test_roost_js_heartbeat_timeout_reconnects(
    server: ServerProcess, open_chat: Callable[..., Chat]
) -> None:
    """Heartbeats that get no reply close the socket; it reconnects and the channel rejoins."""

    def swallow_heartbeats(ws: WebSocketRoute) -> None:
        upstream = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            if json.loads(message)[2] != "phoenix":
                upstream.send(message)

        ws.on_message(to_server)

    chat = open_chat(f"{server.url}/rooms/beat-host", user="host")
    chat.wait_connected()
    chat.page.route_web_socket("**/socket/websocket*", swallow_heartbeats)
    out = chat.page.evaluate(HEARTBEAT_TIMEOUT)
    assert out["closes"] == [[1000, "heartbeat timeout"]], out
    assert out["opens"] >= 2 and out["joins"] >= 2, out  # reconnected, then rejoined


PRESENCE_DIFFERENTIAL = """
async () => {
  const ours = (await import("/static/roost.js")).Presence
  const theirs = (await import("/phoenix-reference.mjs")).Presence
  let seed = 7
  const rand = n => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n }
  const keys = ["al", "bo", "cy", "constructor", "__proto__"]
  let nextRef = 1
  const meta = () => ({phx_ref: `r${nextRef++}`, online_at: nextRef})
  const runs = []
  for (const P of [ours, theirs]) {
    seed = 7; nextRef = 1
    let state = {}
    const log = []
    const size = p => (p ? p.metas.length : null)
    const onJoin = (k, cur, joined) => log.push(["join", k, size(cur), size(joined)])
    const onLeave = (k, cur, left) => log.push(["leave", k, size(cur), size(left)])
    for (let step = 0; step < 300; step++) {
      const current = Object.assign(Object.create(null), JSON.parse(JSON.stringify(state)))
      if (rand(5) === 0) {
        // a full state: keep some current metas, drop others, add new ones
        const next = Object.create(null)
        for (const k of keys) {
          const kept = (current[k] ? current[k].metas : []).filter(() => rand(3) > 0)
          const added = rand(3) === 0 ? [meta()] : []
          if (kept.length + added.length) next[k] = {metas: [...kept, ...added]}
        }
        state = P.syncState(state, JSON.parse(JSON.stringify(next)), onJoin, onLeave)
      } else {
        const joins = Object.create(null), leaves = Object.create(null)
        const k = keys[rand(keys.length)]
        if (rand(2) === 0) joins[k] = {metas: [meta()]}
        const cur = current[keys[rand(keys.length)]]
        if (cur && rand(2) === 0) {
          const key = Object.keys(current).find(x => current[x] === cur)
          leaves[key] = {metas: cur.metas.filter(() => rand(2) === 0)}
        }
        state = P.syncDiff(state, {joins, leaves}, onJoin, onLeave)
      }
      log.push(JSON.stringify(P.list(state, (k, p) => [k, p.metas.map(m => m.phx_ref)])))
    }
    // the instance API: diffs before the state are held back until it arrives
    const binds = {}
    let joinRef = "1"
    const channel = {on: (e, cb) => { binds[e] = cb }, joinRef: () => joinRef}
    const presence = new P(channel)
    const syncs = []
    presence.onSync(() => syncs.push(presence.list((k, p) => k + ":" + p.metas.length).join(",")))
    binds.presence_diff({joins: {zed: {metas: [{phx_ref: "z1"}]}}, leaves: {}})
    syncs.push("pending:" + presence.inPendingSyncState())
    binds.presence_state({al: {metas: [{phx_ref: "a1"}]}})
    binds.presence_diff({
      joins: {al: {metas: [{phx_ref: "a2"}]}}, leaves: {zed: {metas: [{phx_ref: "z1"}]}},
    })
    joinRef = "2"  // rejoined: diffs wait for the new state again
    binds.presence_diff({joins: {bo: {metas: [{phx_ref: "b1"}]}}, leaves: {}})
    binds.presence_state({bo: {metas: [{phx_ref: "b1"}]}})
    runs.push({log, syncs})
  }
  return runs
}
"""


def test_presence_matches_phoenix_js(server: ServerProcess, open_chat: Callable[..., Chat]) -> None:
    """roost.js Presence against the official phoenix.js Presence, on the same random steps."""
    if not PHOENIX_MJS.is_file():
        pytest.fail(f"{PHOENIX_MJS} is missing: run `npm ci` in tests/js (scripts/test does)")
    chat = open_chat(f"{server.url}/rooms/presence", user="pres")
    chat.page.route(
        "**/phoenix-reference.mjs",
        lambda route: route.fulfill(
            status=200, content_type="text/javascript", body=PHOENIX_MJS.read_text()
        ),
    )
    ours, theirs = chat.page.evaluate(PRESENCE_DIFFERENTIAL)
    assert len(ours["log"]) > 300  # 300 list snapshots plus the join/leave callbacks
    assert ours["log"] == theirs["log"]
    assert ours["syncs"] == theirs["syncs"]
    assert ours["syncs"] == ["pending:true", "al:1,zed:1", "al:2", "bo:1"]


# -- the screenshot for the README -------------------------------------------------------------


# -- roost.js's binary decoder checks every length -------------------------------------------

MALFORMED_FRAMES = """
async () => {
  const {Serializer, Socket} = await import("/static/roost.js")
  const enc = s => [...new TextEncoder().encode(s)]
  const buf = bytes => new Uint8Array(bytes).buffer
  const plain = m => JSON.parse(JSON.stringify(m, (k, v) =>
    v instanceof ArrayBuffer ? [...new Uint8Array(v)] : v))
  const outcome = bytes => {
    try { return {ok: plain(Serializer.binaryDecode(buf(bytes)))} }
    catch (e) { return {error: e.message} }
  }
  const good = {
    push: [0, 1, 3, 1, ...enc("7"), ...enc("a:b"), ...enc("e"), 9, 9],
    reply: [1, 1, 1, 3, 2, ...enc("7"), ...enc("8"), ...enc("a:b"), ...enc("ok"), 5],
    broadcast: [2, 3, 1, ...enc("a:b"), ...enc("e")],
  }
  const bad = {
    empty: [],
    unknownKind: [7, 0, 0],
    shortHeader: [1, 1, 1],
    pastEnd: [0, 1, 3, 200, ...enc("7"), ...enc("a:b"), ...enc("e")],
    pastEndByOne: [2, 3, 2, ...enc("a:b"), ...enc("e")],
    notUtf8: [2, 2, 1, 0xff, 0xfe, ...enc("e")],
    noTopic: [2, 0, 1, ...enc("e")],
    noEvent: [2, 3, 0, ...enc("a:b")],
  }
  const out = {good: {}, bad: {}}
  for (const [name, bytes] of Object.entries(good)) out.good[name] = outcome(bytes)
  for (const [name, bytes] of Object.entries(bad)) out.bad[name] = outcome(bytes)

  // through a Socket: malformed frames are dropped and reported, the next good one arrives
  class Fake {
    constructor() {
      Fake.last = this
      this.readyState = 0
      setTimeout(() => { this.readyState = 1; this.onopen() }, 0)
    }
    send() {}
    close() { this.readyState = 3 }
  }
  const logs = []
  const logger = (kind, msg) => logs.push(`${kind}: ${msg}`)
  const socket = new Socket("/socket", {transport: Fake, logger})
  socket.connect()
  while (!socket.isConnected()) await new Promise(r => setTimeout(r, 5))
  const got = []
  socket.channel("a:b").on("e", payload => got.push([...new Uint8Array(payload)]))
  const thrown = []
  const frames = [
    ...Object.values(bad).map(buf), "not json", '{"topic": "a:b"}', "[1, 2]",
    buf([2, 3, 1, ...enc("a:b"), ...enc("e"), 42]),
  ]
  for (const data of frames) {
    try { Fake.last.onmessage({data}) } catch (e) { thrown.push(e.message) }
  }
  socket.disconnect()
  out.got = got
  out.thrown = thrown
  out.dropped = logs.filter(l => l.includes("dropped"))
  return out
}
"""


def test_roost_js_drops_malformed_frames(
    server: ServerProcess, open_chat: Callable[..., Chat]
) -> None:
    """Every length field of a binary frame is checked: a frame whose lengths run past its
    end (or that is shorter than its header, of an unknown kind, not UTF-8, or without a
    topic or event) is dropped and reported, never mis-parsed; so is a malformed text frame."""
    chat = open_chat(f"{server.url}/rooms/frames-host", user="host")
    out = chat.page.evaluate(MALFORMED_FRAMES)
    assert out["good"]["push"]["ok"] == {
        "join_ref": "7",
        "ref": None,
        "topic": "a:b",
        "event": "e",
        "payload": [9, 9],
    }
    assert out["good"]["reply"]["ok"] == {
        "join_ref": "7",
        "ref": "8",
        "topic": "a:b",
        "event": "phx_reply",
        "payload": {"status": "ok", "response": [5]},
    }
    assert out["good"]["broadcast"]["ok"]["payload"] == []
    assert all("error" in o for o in out["bad"].values()), out["bad"]
    assert "run past" in out["bad"]["pastEnd"]["error"]
    assert "run past" in out["bad"]["pastEndByOne"]["error"]
    assert "shorter than its header" in out["bad"]["shortHeader"]["error"]
    assert out["thrown"] == [], out
    assert out["got"] == [[42]], out  # only the good frame reached the channel
    assert len(out["dropped"]) == len(out["bad"]) + 3, out["dropped"]


# -- roost.js falls back to long-poll ----------------------------------------------------------

#: The page's WebSocket cannot connect: as when a proxy refuses the upgrade (error, then
#: close 1006) or swallows it (the socket never opens).
BROKEN_WEBSOCKET = """
window.WebSocket = class {
  constructor(url) {
    this.url = url
    this.readyState = 0
    window.wsAttempts = (window.wsAttempts || 0) + 1
    if (MODE === "refused") setTimeout(() => {
      this.readyState = 3
      this.onerror && this.onerror(new Event("error"))
      this.onclose && this.onclose(new CloseEvent("close", {code: 1006}))
    }, 20)
  }
  send() { throw new DOMException("not open", "InvalidStateError") }
  close() { this.readyState = 3 }
}
"""


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    redis = start_redis()
    logs = tmp_path_factory.mktemp("browser-two-nodes")
    args = ["--redis", redis.url, "--longpoll-window", "2"]
    nodes = [start_server(*args, node=n, log_dir=logs) for n in ("b1", "b2")]
    yield nodes
    for n in nodes:
        n.stop()
    redis.stop()


@pytest.mark.parametrize("mode", ["refused", "hangs"])
def test_chat_falls_back_to_longpoll_across_nodes(
    two_nodes: list[ServerProcess], open_chat: Callable[..., Chat], mode: str
) -> None:
    """WebSocket fails (at once, or by never opening within longPollFallbackMs): the page
    chats over /socket/longpoll on node b1 with a WebSocket page on node b2, both ways."""
    b1, b2 = two_nodes
    room = f"fallback-{mode}"
    polly = open_chat(
        f"{b1.url}/rooms/{room}",
        user=f"polly{mode[0]}",
        init_script=BROKEN_WEBSOCKET.replace("MODE", json.dumps(mode)),
    )
    polly.wait_connected()
    wes = open_chat(f"{b2.url}/rooms/{room}", user=f"wes{mode[0]}")
    wes.wait_connected()
    expect(polly.page.locator("#node")).to_have_text("node b1")
    expect(wes.page.locator("#node")).to_have_text("node b2")
    expect(entered(polly.page, f"wes{mode[0]}")).to_be_visible(timeout=WAIT_MS)
    polly.send("over long-poll")
    expect(wes.page.locator("#messages li.msg")).to_have_count(1, timeout=WAIT_MS)
    wes.send("over websocket")
    expected = [f"[polly{mode[0]}] over long-poll", f"[wes{mode[0]}] over websocket"]
    for chat in (polly, wes):
        expect(chat.page.locator("#messages li.msg")).to_have_count(2, timeout=WAIT_MS)
        assert chat.lines() == expected
    assert any("/socket/longpoll" in url for url in polly.requests), polly.requests
    assert not any("/socket/longpoll" in url for url in wes.requests)
    assert polly.page.evaluate("window.wsAttempts") >= 1
    # the fallback is remembered for the tab: a reload goes straight to long-poll
    attempts = polly.page.evaluate("window.wsAttempts")
    polly.page.reload()
    polly.wait_connected()
    assert polly.page.evaluate("window.wsAttempts || 0") == 0, attempts
    for server in two_nodes:
        assert "Traceback" not in server.log()


LONGPOLL_API = """
async () => {
  const {Socket, LongPoll} = await import("/static/roost.js")
  const socket = new Socket("/socket", {transport: LongPoll, params: {user: "lp"}})
  const reply = (push) => new Promise(resolve => push
    .receive("ok", r => resolve({ok: r})).receive("error", r => resolve({error: r}))
    .receive("timeout", () => resolve("timeout")))
  let opens = 0
  socket.onOpen(() => opens++)
  socket.connect()
  const ch = socket.channel("rooms:lpapi", {user: "lp"})
  const got = []
  ch.on("new:msg", m => got.push(m.body))
  const out = {}
  out.join = await reply(ch.join())
  const pushes = await Promise.all([1, 2, 3].map(i => reply(ch.push("new:msg", {body: `m${i}`}))))
  out.pushes = pushes.map(p => Object.keys(p)[0])
  while (got.length < 3) await new Promise(r => setTimeout(r, 20))
  out.got = got
  out.connected = socket.isConnected()
  out.left = await new Promise(resolve => { ch.onClose(() => resolve(ch.state)); ch.leave() })
  await new Promise(resolve => socket.disconnect(resolve))
  out.opens = opens
  out.afterDisconnect = socket.connectionState()
  return out
}
"""


def test_roost_js_longpoll_transport(server: ServerProcess, open_chat: Callable[..., Chat]) -> None:
    chat = open_chat(f"{server.url}/rooms/lp-host", user="host")
    out = chat.page.evaluate(LONGPOLL_API)
    assert out["join"]["ok"]["node"] == "n1", out
    assert out["pushes"] == ["ok", "ok", "ok"]
    assert out["got"] == ["m1", "m2", "m3"]  # in order, batched into one POST or not
    assert out["connected"] is True and out["left"] == "closed"
    assert out["opens"] == 1 and out["afterDisconnect"] == "closed"
    assert sum("/socket/longpoll" in url for url in chat.requests) >= 3


def test_screenshot(open_chat: Callable[..., Chat], tmp_path: Path) -> None:
    """The README's screenshot, from a real session: two fresh nodes on a private Redis
    (so the room holds only this chat), ana and ben on n1, carol on n2; the shot is
    taken once ana's online list shows all three, each with the node serving them.

    Message times change every run, so docs/img/chat.png is only (re)written when it is
    missing or ROOST_UPDATE_SCREENSHOT=1; otherwise the shot goes to a temporary file.
    """
    update = os.environ.get("ROOST_UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists()
    target = SCREENSHOT if update else tmp_path / "chat.png"
    redis = start_redis()
    servers = [start_server("--redis", redis.url, node=n, log_dir=tmp_path) for n in ("n1", "n2")]
    try:
        where = {"ana": servers[0], "ben": servers[0], "carol": servers[1]}
        people = {}
        for name, srv in where.items():
            people[name] = open_chat(f"{srv.url}/rooms/lobby", user=name)
            people[name].wait_connected()
        ana = people["ana"]
        expect(entered(ana.page, "carol")).to_be_visible(timeout=WAIT_MS)
        expect(people["carol"].page.locator("#node")).to_have_text("node n2")
        script = [
            ("ana", "hi both! this page talks to roost over the Phoenix Channels protocol"),
            ("ben", "and the official phoenix.js client works against the same server"),
            (
                "carol",
                "I'm on node n2, you two are on n1: Redis carries the room between the nodes",
            ),
            ("ben", "<b>this stays text</b>, never HTML"),
            ("ana", "stop the server and the dot turns amber; the page rejoins by itself"),
            ("carol", "and the online list shows who is here, and on which node"),
        ]
        for name, text in script:
            people[name].send(text)
            expect(ana.page.locator("#messages li.msg .body").last).to_have_text(
                text, timeout=WAIT_MS
            )
        # the picture shows what the chat does: everyone listed, each with their node
        online = ana.page.locator("#online-list li")
        expect(online.locator(".name")).to_have_text(["ana", "ben", "carol"], timeout=WAIT_MS)
        expect(online).to_have_text(
            [re.compile(r"ana.*n1"), re.compile(r"ben.*n1"), re.compile(r"carol.*n2")]
        )
        expect(ana.page.locator("#online-count")).to_have_text("3")
        expect(ana.page.locator("#online-empty")).to_be_hidden()
        ana.page.locator("#message").fill("see you in #side")
        target.parent.mkdir(parents=True, exist_ok=True)
        ana.page.screenshot(path=str(target), animations="disabled", caret="hide")
        assert target.stat().st_size > 10_000
    finally:
        for srv in servers:
            srv.stop()
        redis.stop()
