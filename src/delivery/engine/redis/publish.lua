-- Publishes one message: the key's presence decides delivered/pending, the message is
-- appended to the key's stream (sequence, room for it, collapse) and published on the
-- key's channel, all in one atomic step. Kept lean, since it runs for every message:
-- room is made with XADD's own MAXLEN, the count of entries lives in meta (no XLEN),
-- expired entries are dropped by the next registration (subscribe.lua) or with the
-- stream's keys, whose expiry is pushed back once per quarter TTL (stream_mark).
-- ARGV: 1 payload, 2 kind (s string, j JSON), 3 collapse name or '', 4 retain (1/0),
-- 5 max entries, 6 ttl ms, 7 epoch candidate, 8 channel (it has the key's hash tag, so it
-- is in this script's slot and on a cluster only its shard carries it), 9 deadline (Redis ms, 0: none),
-- 10 origin (RELAY:TOKEN when the publishing relay waits for its own copy, or ''),
-- Returns {connections, epoch, seq, evicted by max, collapsed}, or {-1}
-- past the deadline: the relay has already answered that the send could not complete
-- (Redis was paused, or the request was held up), so it must not happen late.
local now = now_ms()
local deadline = tonumber(ARGV[9])
if deadline > 0 and now > deadline then
  return {-1, '', 0, 0, 0}
end
local connections = presence()
if ARGV[4] ~= '1' then
  publish(ARGV[8], '\n\n' .. ARGV[10] .. '\n' .. ARGV[2] .. ARGV[1])
  return {connections, '', 0, 0, 0}
end
local ttl, max = tonumber(ARGV[6]), tonumber(ARGV[5])
local epoch, last, evicted, count, x, holes, created = open(ARGV[7], true)
local evicted_before, count_before, holes_before = evicted, count, holes
local seq = last + 1
local fields = {'t', int(now), 'f', ARGV[2], 'p', ARGV[1]}
local collapsed = 0
local name = ARGV[3]
if name ~= '' then
  local old = redis.call('HGET', KEYS[4], name)
  if old then
    collapsed = redis.call('XDEL', KEYS[2], old .. '-0')
    count = count - collapsed
    redis.call('ZREM', KEYS[3], old)
  end
  redis.call('HSET', KEYS[4], name, int(seq))
  fields[7], fields[8] = 'c', name
  holes = true
end
local pending = connections == 0
-- Room for the new entry: XADD's MAXLEN drops the oldest. Without collapse names the
-- log holds exactly the seqs last-count+1 .. last, so what goes is known without
-- reading it; with them, the oldest are read for their names and seqs.
local by_max = 0
if count >= max then
  local through
  if holes then
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', count - max + 1)
    for _, entry in ipairs(oldest) do
      forget_collapse(entry)
    end
    by_max = #oldest
    through = by_max > 0 and seq_of(oldest[by_max][1])
  else
    by_max = count - max + 1
    through = last - count + by_max
  end
  count = count - by_max
  if through then
    -- The pending set only grows while nobody is connected; it is trimmed then.
    if pending or holes then
      evicted = evicted_through(through, evicted)
    else
      evicted = math.max(through, evicted)
    end
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', max, int(seq) .. '-0', unpack(fields))
count = count + 1
if pending then
  redis.call('ZADD', KEYS[3], seq, int(seq))
end
local pushed
pushed, x = stream_mark(now, ttl, x)
save_meta(created or pushed or holes ~= holes_before, epoch, seq, evicted, count, x, holes,
  evicted ~= evicted_before, count ~= count_before)
expire_stream(pushed, x, ttl, pending, name ~= '')
publish(ARGV[8],
  epoch .. '\n' .. int(seq) .. '\n' .. ARGV[10] .. '\n' .. ARGV[2] .. ARGV[1])
return {connections, epoch, seq, by_max, collapsed}
