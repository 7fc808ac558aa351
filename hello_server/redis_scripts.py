"""The Redis backend's key layout and Lua scripts (docs/redis.md explains them).

Every key of a room shares the hash tag ``{room}``, so that each script
touches one Redis Cluster slot. Per room:

- ``hello:{room}:meta``  hash: ``epoch``, ``seq`` (last accepted), ``bytes``
  (of the history), ``sessions`` (joined streams on every node);
- ``hello:{room}:hist``  list: the latest payloads, oldest first; the last
  one has seq ``seq``, so entry ``i`` of ``n`` has seq ``seq - n + 1 + i``;
- ``hello:{room}:users`` hash: user id -> sessions on every node;
- ``hello:{room}:names`` hash: user id -> ``"<since ns>|<name>"``;
- ``hello:{room}:nodes`` hash: ``"<node>\\0<member>"`` -> user id: who holds
  each session, so that a dead node's sessions can be removed (swept);
- channel ``hello:{room}:chan``: ``b<epoch><first seq> <size> <size>...\\n``
  and the payloads one after another for a batch of messages (seqs
  ``first``, ``first + 1``...), ``p<epoch><user>\\n<record>`` for a presence
  event; servers still read ``m<epoch><seq>\\n<payload>``, one message, as
  servers published before batching (a rolling upgrade).

Per node (not per room): ``hello:nodes``, a sorted set of node -> expiry
(ms since the epoch, refreshed by the node's heartbeat), and
``hello:node:<node>:rooms``, the rooms where a node has sessions.
"""

from __future__ import annotations

EPOCH_CHARS = 16  # secrets.token_hex(8)
NODES_KEY = "hello:nodes"


def room_keys(room_id: str) -> list[str]:
    """meta, hist, users, names, nodes: the KEYS of every room script, in that order."""
    prefix = f"hello:{{{room_id}}}:"
    return [prefix + "meta", prefix + "hist", prefix + "users", prefix + "names", prefix + "nodes"]


def channel(room_id: str) -> str:
    return f"hello:{{{room_id}}}:chan"


def node_rooms_key(node: str) -> str:
    return f"hello:node:{node}:rooms"


# The last member anywhere left: drop the room, or keep it for the room TTL.
_RETIRE = """
local function retire(ttl)
  if ttl > 0 then
    redis.call('HSET', KEYS[1], 'sessions', 0)
    for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
  else
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  end
end
"""

# ARGV: session field, user, "since|name", fresh epoch, history count,
# resume epoch, resume since_seq, node's epoch, node's last seq, channel,
# JOINED record. Registers the session (creating the room, or reviving a
# retained one), announces a user's first session, and returns
# {epoch, seq, first kept seq, entries from the lowest seq anyone asked for}.
JOIN = """
local meta, hist, users, names, nodes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', hist, users, names, nodes)
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0, 'bytes', 0, 'sessions', 0)
else
  for i = 1, 5 do redis.call('PERSIST', KEYS[i]) end
end
local seq = tonumber(redis.call('HGET', meta, 'seq'))
redis.call('HSET', nodes, ARGV[1], ARGV[2])
redis.call('HINCRBY', meta, 'sessions', 1)
if redis.call('HINCRBY', users, ARGV[2], 1) == 1 then
  redis.call('HSET', names, ARGV[2], ARGV[3])
  redis.call('PUBLISH', ARGV[10], 'p' .. epoch .. ARGV[2] .. '\\n' .. ARGV[11])
end
local first = seq - redis.call('LLEN', hist) + 1
local lo = seq + 1
local count = tonumber(ARGV[5])
if count > 0 then lo = math.min(lo, seq - count + 1) end
if ARGV[6] == epoch then lo = math.min(lo, tonumber(ARGV[7]) + 1) end
if ARGV[8] == epoch then lo = math.min(lo, tonumber(ARGV[9]) + 1) end
if lo < first then lo = first end
local entries = {}
if lo <= seq then entries = redis.call('LRANGE', hist, lo - seq - 1, -1) end
return {epoch, seq, first, entries}
"""

# ARGV: history count bound, history byte bound, channel, then one or more
# encoded messages without their seq (a batch of one room's sends, in order).
# Nil if nobody anywhere is in the room; else the first message's seq (the
# others follow on). Each seq is appended as protobuf field 5 (tag 0x28, a
# varint): a parser takes fields in any order, so members get what the
# in-process hub sends. One PUBLISH carries the whole batch.
SEND = """
local meta, hist = KEYS[1], KEYS[2]
local state = redis.call('HMGET', meta, 'sessions', 'epoch')
if not state[1] or tonumber(state[1]) <= 0 then return false end
local count = #ARGV - 3
local first = redis.call('HINCRBY', meta, 'seq', count) - count + 1
local payloads, sizes, added = {}, {}, 0
for i = 1, count do
  local parts = {ARGV[i + 3], '\\40'}
  local n = first + i - 1
  while n >= 128 do
    parts[#parts + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  parts[#parts + 1] = string.char(n)
  local payload = table.concat(parts)
  payloads[i] = payload
  sizes[i] = #payload
  added = added + #payload
end
local max_count, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
if max_count > 0 then
  redis.call('RPUSH', hist, unpack(payloads))
  local bytes = redis.call('HINCRBY', meta, 'bytes', added)
  local kept = redis.call('LLEN', hist)
  while kept > 0 and (kept > max_count or bytes > max_bytes) do
    local old = redis.call('LPOP', hist)
    bytes = redis.call('HINCRBY', meta, 'bytes', -#old)
    kept = kept - 1
  end
end
redis.call('PUBLISH', ARGV[3], 'b' .. state[2] .. string.format('%d', first) .. ' '
  .. table.concat(sizes, ' ') .. '\\n' .. table.concat(payloads))
return first
"""

# ARGV: session field, channel, LEFT record, room TTL in ms. Idempotent:
# -1 if the session is not registered (already removed or swept); else the
# sessions left in the room.
LEAVE = (
    _RETIRE
    + """
local meta, users, names, nodes = KEYS[1], KEYS[3], KEYS[4], KEYS[5]
local user = redis.call('HGET', nodes, ARGV[1])
if not user then return -1 end
redis.call('HDEL', nodes, ARGV[1])
local epoch = redis.call('HGET', meta, 'epoch') or ''
local left = redis.call('HINCRBY', meta, 'sessions', -1)
if redis.call('HINCRBY', users, user, -1) <= 0 then
  redis.call('HDEL', users, user)
  redis.call('HDEL', names, user)
  redis.call('PUBLISH', ARGV[2], 'p' .. epoch .. user .. '\\n' .. ARGV[3])
end
if left <= 0 then retire(tonumber(ARGV[4])) end
return left
"""
)

# ARGV: a dead node's field prefix ("<node>\\0"), room TTL in ms. Removes
# its sessions; returns {epoch, {user, "since|name", ...}} for the users
# that left with them (the sweeper announces them), or {} if no room.
SWEEP = (
    _RETIRE
    + """
local meta, users, names, nodes = KEYS[1], KEYS[3], KEYS[4], KEYS[5]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {} end
local all = redis.call('HGETALL', nodes)
local prefix = ARGV[1]
local gone = {}
for i = 1, #all, 2 do
  local field, user = all[i], all[i + 1]
  if string.sub(field, 1, #prefix) == prefix then
    redis.call('HDEL', nodes, field)
    redis.call('HINCRBY', meta, 'sessions', -1)
    if redis.call('HINCRBY', users, user, -1) <= 0 then
      gone[#gone + 1] = user
      gone[#gone + 1] = redis.call('HGET', names, user) or ''
      redis.call('HDEL', users, user)
      redis.call('HDEL', names, user)
    end
  end
end
if tonumber(redis.call('HGET', meta, 'sessions')) <= 0 then retire(tonumber(ARGV[2])) end
return {epoch, gone}
"""
)

# No ARGV. Nil if nobody is in the room; else {users hash, names hash} flat.
MEMBERS = """
local sessions = redis.call('HGET', KEYS[1], 'sessions')
if not sessions or tonumber(sessions) <= 0 then return false end
return {redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
"""

# ARGV: the lowest seq wanted. {epoch, seq, first kept seq, entries from
# max(wanted, first kept)}, or {} if the room is gone: a node's refill.
FETCH = """
local meta, hist = KEYS[1], KEYS[2]
local state = redis.call('HMGET', meta, 'epoch', 'seq')
if not state[1] then return {} end
local seq = tonumber(state[2])
local first = seq - redis.call('LLEN', hist) + 1
local lo = math.max(tonumber(ARGV[1]), first)
local entries = {}
if lo <= seq then entries = redis.call('LRANGE', hist, lo - seq - 1, -1) end
return {state[1], seq, first, entries}
"""
