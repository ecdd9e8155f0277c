-- Keeps (or, with 0, drops) this relay's lease among the key's watchers, and reads the
-- key's presence. While the watchers hash exists, every change of a relay's count is
-- published on the key's channel (see set_presence in lib.lua).
-- ARGV: 1 relay, 2 watching (1/0), 3 lease ms.
-- Returns {connections on every live relay, Redis's clock in ms}.
local now = now_ms()
local lease = tonumber(ARGV[3])
if ARGV[2] == '1' then
  local all = redis.call('HGETALL', KEYS[6])
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) <= now then
      redis.call('HDEL', KEYS[6], all[i])
    end
  end
  redis.call('HSET', KEYS[6], ARGV[1], int(now + lease))
  redis.call('PEXPIRE', KEYS[6], lease)
else
  redis.call('HDEL', KEYS[6], ARGV[1])
end
return {presence(now), now}
