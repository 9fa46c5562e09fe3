"""History in Redis: a stream and a meta hash per topic, written by one Lua script.

    hash   <prefix>:<app>:m:{topic}   epoch, offset, bytes (of the stream's fields),
                                      g (replication id of the Redis that wrote last),
                                      a (set: a write of this epoch was acknowledged
                                      without WAIT), prev and base (the epoch before,
                                      its last offset here), k (1: positions of prev up
                                      to base continue in this epoch, see ``continues``)
    stream <prefix>:<app>:h:{topic}   entry id <offset>-0: e (event), p (payload), t (ms),
                                      n (origin node), s (signature, or "")

Both keys are written only by ``PUBLISH_STORED`` (and the epoch switch of ``READ`` and
``PAGE``): reading a topic creates nothing. It bumps the offset, splices it into the
payload, XADDs (capped by count and by bytes), refreshes both keys' TTL (the age cap)
and PUBLISHes the envelope — in one script, so the offset a client sees always matches
the stream. The ``{topic}`` hash tag keeps a topic's keys (and its sharded channel) in
one Cluster slot.
"""

from __future__ import annotations

from typing import Any

from ...pubsub.history import Position, StoredMessage, first_after, is_empty

# Lua helpers. ``gen()``: the replication id (``master_replid``) of this Redis — one
# history of writes: it changes when a replica is promoted, when a demoted master
# resyncs from another (it takes that one's), when a server restarts; "-" where INFO is
# not allowed. ``stamp``: it and the clock in milliseconds, for epochs and empty
# positions. ``epoch_of``: the topic's epoch (meta = HMGET epoch, g, a), a new one first
# when another replication history wrote it last — this Redis may lack writes that one
# acknowledged (a promoted replica, or a split brain's old master that went on taking
# writes), so the offsets after its own must not be handed out again under the same
# epoch, nor a position answered as recovered from what this Redis has. A position of
# the old epoch continues in the new one (``k`` = 1) only when no write of the old epoch
# was acknowledged without WAIT (``a``): then every acknowledged one is here.
_STAMP = """
local function gen()
  local info = redis.pcall('INFO', 'replication')
  return type(info) == 'string' and string.match(info, 'master_replid:(%x+)') or '-'
end
local function stamp(g)
  local t = redis.call('TIME')
  local ms = string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  return string.sub(g, 1, 8) .. '.' .. t[1] .. ms
end
local function epoch_of(key, meta, g, nonce)
  local epoch = meta[1]
  if not epoch or meta[2] == g then return epoch, false end
  local base = redis.call('HGET', key, 'offset') or '0'
  local new = stamp(g) .. '.' .. nonce
  redis.call('HSET', key, 'prev', epoch, 'base', base, 'k', meta[3] and '0' or '1',
             'epoch', new, 'g', g)
  redis.call('HDEL', key, 'a')
  return new, true
end
"""

# KEYS: 1 meta, 2 stream, 3 idempotency keys (zset: "<epoch>|<key>" scored by offset).
# ARGV: 1 nonce, 2 channel, 3 node, 4 seq, 5 topic, 6 event, 7 payload, 8 exclude,
# 9 ts, 10 max entries, 11 max age (ms), 12 signature, 13 max bytes, 14 idempotency key
# ("" for none), 15 replicas the acknowledgement waits for (WAIT N; 0 or absent: none,
# and the epoch is marked ``a``). The meta counts the bytes of the stream's fields; the
# oldest entries go while there are more than max entries or max bytes (the newest one
# always stays), and their idempotency keys with them. A key already stored in this
# epoch and still kept: nothing is written or published, the first copy's
# {offset, epoch, 1} comes back.
PUBLISH_STORED = (
    _STAMP
    + """
local g = gen()
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'g', 'a')
local epoch, fresh = epoch_of(KEYS[1], meta, g, ARGV[1])
if not epoch then
  epoch, fresh = stamp(g) .. '.' .. ARGV[1], true
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'bytes', 0, 'g', g)
end
if tonumber(ARGV[15] or '0') == 0 and (fresh or not meta[3]) then
  redis.call('HSET', KEYS[1], 'a', 1)
end
local idem = KEYS[3] and (ARGV[14] or '') ~= '' and (epoch .. '|' .. ARGV[14]) or nil
if idem then
  local first = redis.call('ZSCORE', KEYS[3], idem)
  if first then return {tonumber(first), epoch, 1} end
end
local off = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local p = ARGV[7]
if p == '{}' then
  p = '{"offset":' .. off .. '}'
else
  p = string.sub(p, 1, -2) .. ',"offset":' .. off .. '}'
end
redis.call('XADD', KEYS[2], off .. '-0', 'e', ARGV[6], 'p', p, 't', ARGV[9],
           'n', ARGV[3], 's', ARGV[12])
local size = 5 + #ARGV[6] + #p + #ARGV[9] + #ARGV[3] + #ARGV[12]
local bytes = redis.call('HINCRBY', KEYS[1], 'bytes', size)
local len = redis.call('XLEN', KEYS[2])
local max_len, max_bytes = tonumber(ARGV[10]), tonumber(ARGV[13])
while len > 1 and (len > max_len or bytes > max_bytes) do
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  local gone = 0
  for _, v in ipairs(oldest[2]) do gone = gone + #v end
  redis.call('XDEL', KEYS[2], oldest[1])
  bytes = redis.call('HINCRBY', KEYS[1], 'bytes', -gone)
  len = len - 1
end
if bytes < 0 then redis.call('HSET', KEYS[1], 'bytes', 0) end
if idem then redis.call('ZADD', KEYS[3], off, idem) end
if idem or (KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1) then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (off - len + 1))
  redis.call('PEXPIRE', KEYS[3], ARGV[11])
end
redis.call('PEXPIRE', KEYS[1], ARGV[11])
redis.call('PEXPIRE', KEYS[2], ARGV[11])
local env = cmsgpack.pack({2, ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], p, false,
                           ARGV[8], tonumber(ARGV[9]), off, epoch, ARGV[12]})
redis.call('PUBLISH', ARGV[2], env)
return {off, epoch}
"""
)

# The current position and the stored entries: after ARGV[1] when it is >= 0, else
# the newest ARGV[2]; ARGV[3] a nonce (for a new epoch). Creates nothing: a topic
# without history answers with an empty position (offset 0, epoch ``~<stamp>``, see
# ``pubsub.history``); a topic another replication history wrote last gets its new
# epoch first (``epoch_of``). The epoch before is returned only when this one continues
# it (``k``).
READ = (
    _STAMP
    + """
local g = gen()
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'g', 'a')
if not meta[1] then return {'~' .. stamp(g), 0, {}, false, 0} end
local epoch = epoch_of(KEYS[1], meta, g, ARGV[3])
meta = redis.call('HMGET', KEYS[1], 'offset', 'prev', 'base', 'k')
local top = tonumber(meta[1] or '0')
local entries
if tonumber(ARGV[1]) >= 0 then
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
end
local prev = meta[4] == '1' and meta[2] or false
return {epoch, top, entries, prev, tonumber(meta[3] or '0')}
"""
)


# A page of older entries: the epoch, the top offset and up to ARGV[2] entries before
# offset ARGV[1], newest first (stream ids are ``<offset>-0``); ARGV[3] a nonce. Creates
# nothing (a topic another replication history wrote last gets its new epoch first:
# its entries after this Redis's are not here, a page of them would have holes).
PAGE = (
    _STAMP
    + """
local g = gen()
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'g', 'a')
if not meta[1] then return {'~' .. stamp(g), 0, {}} end
local epoch = epoch_of(KEYS[1], meta, g, ARGV[3])
local top = redis.call('HGET', KEYS[1], 'offset')
local entries = redis.call('XREVRANGE', KEYS[2], '(' .. ARGV[1] .. '-0', '-', 'COUNT', ARGV[2])
return {epoch, tonumber(top or '0'), entries}
"""
)


# A topic's position and the entries after a cursor, for catch-ups and gap fills. Does
# not create the topic. ARGV: the cursor's epoch ('' if none), its offset, how many
# entries at most (0: the position only). When the epoch is not the cursor's, the
# entries are read from where the new epoch continues the cursor (see ``continues``)
# or else from the new epoch's own start: its base (the offset another Redis process
# took over at) or 0 (the history was lost and began again).
# Returns {epoch or false, top offset, entries, the offset read after}.
CATCH_UP = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'prev', 'base')
local epoch = meta[1]
if not epoch then return {false, 0, {}, 0} end
local top = tonumber(meta[2] or '0')
local after = tonumber(ARGV[2])
if epoch ~= ARGV[1] then
  local base = tonumber(meta[4] or '0')
  if not (meta[3] == ARGV[1] and after <= base) then after = base end
end
if tonumber(ARGV[3]) == 0 then return {epoch, top, {}, after} end
local entries = redis.call('XRANGE', KEYS[2], '(' .. after .. '-0', '+', 'COUNT', ARGV[3])
return {epoch, top, entries, after}
"""


def continues(
    since: Position, prev: str | None, base: int, epoch: str, max_age_ms: int
) -> Position:
    """``since`` in the topic's current epoch when that epoch continues it, else as is.

    Another replication history (a promoted replica, a split brain's demoted master
    resynced from another, a restart) that writes or reads a topic begins a new epoch
    (``epoch_of`` compares the replication id that wrote last): what it holds may lack
    writes the last one made, so offsets after its ``base`` may have been seen with
    other messages. ``prev`` is given only when the old epoch's acknowledged writes are
    all here (every one waited for a replica, ``k``): then a position of it at or before
    ``base`` is a prefix of what this Redis holds and continues in the new epoch. Without
    WAIT an acknowledged write after ``base`` may be lost, and answering ``recovered:
    true`` from what is here would leave a hole in it, so no position continues (READ
    gives no ``prev``): recovered: false. A position begun on the empty topic
    (``~<stamp>``, kept by clients that joined it empty) whose first history was the
    previous epoch counts as that epoch's.
    """
    if prev is None:
        return since
    if is_empty(since.epoch) and first_after(since.epoch, prev, max_age_ms):
        since = Position(since.offset, prev)
    if since.epoch == prev and since.offset <= base:
        return Position(since.offset, epoch)
    return since


def parse_entries(entries: list[Any]) -> list[StoredMessage]:
    """Stream entries → StoredMessages, in the given order.

    Accepts raw replies (``[id, [field, value, ...]]``, from a script) and redis-py's
    parsed XRANGE (``(id, {field: value})``).
    """
    out = []
    for entry_id, fields in entries:
        offset = int(entry_id.split(b"-", 1)[0])
        if isinstance(fields, dict):
            values = fields
        else:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
        out.append(
            StoredMessage(
                offset,
                values[b"e"].decode(),
                bytes(values[b"p"]),
                int(values[b"t"]),
                values.get(b"n", b"").decode(),
                values.get(b"s", b"").decode() or None,
            )
        )
    return out
