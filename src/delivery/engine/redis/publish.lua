-- Publishes one message: presence decides delivered/pending, the message is appended to
-- the key's stream (sequence, retention, collapse) and published on the key's channel,
-- all in one atomic step.
-- ARGV: 1 payload, 2 kind (s string, j JSON), 3 collapse name or '', 4 retain (1/0),
-- 5 max entries, 6 ttl ms, 7 epoch candidate, 8 channel (it has the key's hash tag, so it
-- is in this script's slot and on a cluster only its shard carries it), 9 deadline (Redis ms, 0: none),
-- 10 origin (RELAY:TOKEN when the publishing relay waits for its own copy, or ''),
-- Returns {connections, epoch, seq, evicted by ttl, evicted by max, collapsed}, or {-1}
-- past the deadline: the relay has already answered that the send could not complete
-- (Redis was paused, or the request was held up), so it must not happen late.
local now = now_ms()
local deadline = tonumber(ARGV[9])
if deadline > 0 and now > deadline then
  return {-1, '', 0, 0, 0, 0}
end
local connections = presence(now)
if ARGV[4] ~= '1' then
  publish(ARGV[8], '\n\n' .. ARGV[10] .. '\n' .. ARGV[2] .. ARGV[1])
  return {connections, '', 0, 0, 0, 0}
end
local ttl, max = tonumber(ARGV[6]), tonumber(ARGV[5])
local epoch, last = open(ARGV[7], true)
local seq = last + 1
local fields = {'t', int(now), 'f', ARGV[2], 'p', ARGV[1]}
local collapsed = 0
if ARGV[3] ~= '' then
  local old = redis.call('HGET', KEYS[4], ARGV[3])
  if old then
    collapsed = redis.call('XDEL', KEYS[2], old .. '-0')
    redis.call('ZREM', KEYS[3], old)
  end
  redis.call('HSET', KEYS[4], ARGV[3], int(seq))
  table.insert(fields, 'c')
  table.insert(fields, ARGV[3])
end
redis.call('XADD', KEYS[2], int(seq) .. '-0', unpack(fields))
redis.call('HSET', KEYS[1], 's', int(seq))
if connections == 0 then
  redis.call('ZADD', KEYS[3], seq, int(seq))
end
local by_ttl, by_max = trim(now, ttl, max)
expire_stream(ttl)
publish(ARGV[8],
  epoch .. '\n' .. int(seq) .. '\n' .. ARGV[10] .. '\n' .. ARGV[2] .. ARGV[1])
return {connections, epoch, seq, by_ttl, by_max, collapsed}
