-- Shared by every script of the Redis engine (prepended to each one).
-- KEYS of every script: 1 meta (hash: e epoch, s last seq, v evicted through),
-- 2 log (stream, ids SEQ-0, fields t time, f kind, p payload, c collapse name),
-- 3 pending (sorted set of seqs that reached nobody), 4 collapse (hash name -> seq),
-- 5 presence (hash relay -> "COUNT EXPIRY_MS"), 6 watchers (hash relay -> EXPIRY_MS: the
-- relays with watchers of the key's presence, under a lease like presence).
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

-- Connections on every relay whose lease has not run out; dead relays' entries go.
local function presence(now)
  local all = redis.call('HGETALL', KEYS[5])
  local total = 0
  for i = 1, #all, 2 do
    local count, expiry = string.match(all[i + 1], '^(%d+) (%d+)$')
    if count and tonumber(expiry) > now then
      total = total + tonumber(count)
    else
      redis.call('HDEL', KEYS[5], all[i])
    end
  end
  return total
end

-- Tells the key's watchers on every relay its count now, as a presence event on its
-- channel: '\n\n\np' VERSION ' ' COUNT, VERSION being Redis's clock in ms.
local function presence_event(now)
  publish(key_channel(), '\n\n\np' .. int(now) .. ' ' .. int(presence(now)))
end

-- This relay has COUNT connections under the key, for LEASE ms unless refreshed. When
-- the key has watchers somewhere (one EXISTS; nothing more for a key nobody watches) and
-- the count changed, they are told.
local function set_presence(now, relay, count, lease)
  local watched = redis.call('EXISTS', KEYS[6]) == 1
  local before = 0
  if watched then
    local old = redis.call('HGET', KEYS[5], relay)
    before = tonumber(old and string.match(old, '^(%d+) ') or '0')
  end
  if count > 0 then
    redis.call('HSET', KEYS[5], relay, int(count) .. ' ' .. int(now + lease))
    redis.call('PEXPIRE', KEYS[5], lease)
  else
    redis.call('HDEL', KEYS[5], relay)
  end
  if watched and before ~= count then
    presence_event(now)
  end
end

-- The stream's epoch, last seq and evicted-through; a new stream of epoch CANDIDATE when
-- there is none and CREATE is set (whatever an older incarnation left is dropped first).
local function open(candidate, create)
  local meta = redis.call('HMGET', KEYS[1], 'e', 's', 'v')
  if meta[1] then
    return meta[1], tonumber(meta[2]), tonumber(meta[3])
  end
  if not create then
    return nil, 0, 0
  end
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'e', candidate, 's', 0, 'v', 0)
  return candidate, 0, 0
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

-- Drops entries older than TTL ms and past MAX entries, oldest first, and records the
-- highest seq lost. One XTRIM MINID removes them (XDEL would leave tombstones that every
-- later scan from the front steps over). Returns how many went for each reason.
local function trim(now, ttl, max)
  local len = redis.call('XLEN', KEYS[2])
  local by_ttl, by_max = 0, 0
  local last_removed, keep = nil, nil
  local start, count = '-', 2
  while not keep do
    -- Usually one entry goes per append: look at two first, more only if needed.
    local batch = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', count)
    count = 16
    if #batch == 0 then
      break
    end
    for _, entry in ipairs(batch) do
      local old = tonumber(field(entry[2], 't') or '0') < now - ttl
      if not old and len <= max then
        keep = entry[1]
        break
      end
      if old then by_ttl = by_ttl + 1 else by_max = by_max + 1 end
      len = len - 1
      last_removed = entry
      local name = field(entry[2], 'c')
      if name and tonumber(redis.call('HGET', KEYS[4], name) or '-1') == seq_of(entry[1]) then
        redis.call('HDEL', KEYS[4], name)
      end
    end
    start = '(' .. batch[#batch][1]
  end
  if not last_removed then
    return 0, 0
  end
  local seq = seq_of(last_removed[1])
  if keep then
    redis.call('XTRIM', KEYS[2], 'MINID', keep)
  else
    redis.call('XTRIM', KEYS[2], 'MAXLEN', 0)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', seq)
  local evicted = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
  if seq > evicted then
    redis.call('HSET', KEYS[1], 'v', int(seq))
  end
  return by_ttl, by_max
end

-- A stream idle for longer than its TTL holds nothing: it goes as a whole.
local function expire_stream(ttl)
  for i = 1, 4 do
    redis.call('PEXPIRE', KEYS[i], ttl + 1000)
  end
end
