-- Shared by every script of the Redis engine (prepended to each one).
-- KEYS of every script: 1 meta (hash: e epoch, s last seq, v evicted through, n entries
-- in the log, x when the keys' expiry was last pushed back),
-- 2 log (stream, ids SEQ-0, fields t time, f kind, p payload, c collapse name),
-- 3 pending (sorted set of seqs that reached nobody), 4 collapse (hash name -> seq),
-- 5 presence (hash relay -> COUNT, and '*' -> the total), 6 watchers (hash relay -> 1: the
-- relays with watchers of the key's presence).
-- All keys of one KEY share the hash tag {KEY}: one slot, so one script may touch them.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%d', n)
end

-- Every publish on a key's channel goes through here. PUBLISH_COMMAND is set ahead of
-- this prelude by the engine: PUBLISH on one server, SPUBLISH on a Redis Cluster.
local function publish(channel, text)
  return redis.call(PUBLISH_COMMAND, channel, text)
end

-- The key's pub/sub channel: its meta name with the part 'm' replaced by 'ch'.
local function key_channel()
  return string.sub(KEYS[1], 1, -2) .. 'ch'
end

-- Connections on every live relay: the total the presence hash keeps in its field '*'
-- (one HGET per message; a relay that dies has its entries dropped by the relay that
-- notices, drop.lua).
local function presence()
  return tonumber(redis.call('HGET', KEYS[5], '*') or '0')
end

-- Tells the key's watchers on every relay its count now, as a presence event on its
-- channel: '\n\n\np' VERSION ' ' COUNT, VERSION being Redis's clock in ms.
local function presence_event(now, connections)
  publish(key_channel(), '\n\n\np' .. int(now) .. ' ' .. int(connections))
end

-- RELAY has COUNT connections under the key: its entry in the presence hash, written
-- only when it changes (no lease to refresh: a relay's liveness is its heartbeat, see
-- roster.rs), and the total in '*' moved by the difference. When the key has watchers
-- somewhere (one EXISTS; nothing more for a key nobody watches) and the total changed,
-- they are told. An entry of the lease era ('COUNT EXPIRY') reads as its count.
local function set_presence(now, relay, count)
  local old = redis.call('HGET', KEYS[5], relay)
  local before = tonumber(old and string.match(old, '^(%d+)') or '0')
  if count == before then
    return
  end
  if count > 0 then
    redis.call('HSET', KEYS[5], relay, int(count))
  else
    redis.call('HDEL', KEYS[5], relay)
  end
  local total = redis.call('HINCRBY', KEYS[5], '*', count - before)
  if total <= 0 then
    redis.call('HDEL', KEYS[5], '*')
    total = 0
  end
  if redis.call('EXISTS', KEYS[6]) == 1 then
    presence_event(now, total)
  end
end

-- The stream's epoch, last seq, evicted-through, entry count, expiry mark and whether
-- it has used collapse names (holes: then its seqs may have gaps), as stored; a new
-- stream of epoch CANDIDATE when there is none and CREATE is set (whatever an older
-- incarnation left is dropped first; its last value is then true). A stream written
-- before the count was kept is counted once, and taken to have holes. Plain values, not
-- a table: this runs for every message, and Lua tables cost more than the reads.
local function open(candidate, create)
  local meta = redis.call('HMGET', KEYS[1], 'e', 's', 'v', 'n', 'x', 'k')
  if meta[1] then
    local count, holes = tonumber(meta[4]), meta[6] == '1'
    if not count then
      count, holes = redis.call('XLEN', KEYS[2]), true
    end
    return meta[1], tonumber(meta[2]), tonumber(meta[3]), count, tonumber(meta[5]) or 0,
      holes, false
  end
  if not create then
    return nil, 0, 0, 0, 0, false, false
  end
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  return candidate, 0, 0, 0, 0, false, true
end

-- Stores a stream's meta after a step: every field when the step created the stream,
-- pushed its expiry back or gave it holes (rare), else only the last seq and what else
-- changed, since a 6-field HSET costs several times a 2-field one (and an argument
-- table built per message costs more than these branches).
local function save_meta(full, epoch, seq, evicted, count, x, holes, evicted_changed,
                         count_changed)
  if full then
    redis.call('HSET', KEYS[1], 'e', epoch, 's', int(seq), 'v', int(evicted),
      'n', int(count), 'x', int(x), 'k', holes and '1' or '0')
  elseif evicted_changed and count_changed then
    redis.call('HSET', KEYS[1], 's', int(seq), 'v', int(evicted), 'n', int(count))
  elseif evicted_changed then
    redis.call('HSET', KEYS[1], 's', int(seq), 'v', int(evicted))
  elseif count_changed then
    redis.call('HSET', KEYS[1], 's', int(seq), 'n', int(count))
  else
    redis.call('HSET', KEYS[1], 's', int(seq))
  end
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then
      return fields[i + 1]
    end
  end
  return nil
end

local function seq_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- Forgets the collapse name of a log entry that leaves the log, if it still names it.
local function forget_collapse(entry)
  local name = field(entry[2], 'c')
  if name and tonumber(redis.call('HGET', KEYS[4], name) or '-1') == seq_of(entry[1]) then
    redis.call('HDEL', KEYS[4], name)
  end
end

-- The oldest entries, through SEQ, left the log (the caller trims it): the pending set
-- follows. Returns the new evicted-through mark.
local function evicted_through(seq, evicted)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', seq)
  return math.max(seq, evicted)
end

-- Drops entries older than TTL ms and past MAX of the COUNT entries, oldest first (for a
-- registration, which must not hand out an expired message; a publish only makes room,
-- see publish.lua). One XTRIM MINID removes them (XDEL would leave tombstones that every
-- later scan from the front steps over). Returns how many went for each reason and the
-- new count and evicted-through mark.
local function trim(now, ttl, max, count, evicted)
  local by_ttl, by_max = 0, 0
  local last_removed, keep = nil, nil
  local start, batch_size = '-', 2
  while not keep do
    -- Usually nothing or one entry goes: look at two first, more only if needed.
    local batch = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', batch_size)
    batch_size = 16
    if #batch == 0 then
      break
    end
    for _, entry in ipairs(batch) do
      local old = tonumber(field(entry[2], 't') or '0') < now - ttl
      if not old and count <= max then
        keep = entry[1]
        break
      end
      if old then by_ttl = by_ttl + 1 else by_max = by_max + 1 end
      count = count - 1
      last_removed = entry
      forget_collapse(entry)
    end
    start = '(' .. batch[#batch][1]
  end
  if not last_removed then
    return 0, 0, count, evicted
  end
  if keep then
    redis.call('XTRIM', KEYS[2], 'MINID', keep)
  else
    redis.call('XTRIM', KEYS[2], 'MAXLEN', 0)
  end
  return by_ttl, by_max, count, evicted_through(seq_of(last_removed[1]), evicted)
end

-- A stream idle for longer than its TTL holds nothing: its keys expire as a whole, at
-- X + TTL + TTL/4 + 1 s, X being when that deadline was last pushed back (kept in meta).
-- It is pushed back only once a quarter of the TTL has passed since X, so every entry
-- still outlives its TTL and a busy stream pays its four PEXPIREATs once per quarter
-- TTL, not per message. `stream_mark` decides (before meta is written, which stores the
-- mark); `expire_stream` sets the deadline after the writes (a key that does not exist
-- takes no expiry), also on the pending set or collapse hash when this step wrote them,
-- since one created after the last push needs the deadline too.
local function stream_mark(now, ttl, x)
  if now - x >= ttl / 4 then
    return true, now
  end
  return false, x
end

local function expire_stream(pushed, x, ttl, wrote_pending, wrote_collapse)
  local at = x + ttl + math.floor(ttl / 4) + 1000
  if pushed then
    for i = 1, 4 do
      redis.call('PEXPIREAT', KEYS[i], at)
    end
    return
  end
  if wrote_pending then
    redis.call('PEXPIREAT', KEYS[3], at)
  end
  if wrote_collapse then
    redis.call('PEXPIREAT', KEYS[4], at)
  end
end
