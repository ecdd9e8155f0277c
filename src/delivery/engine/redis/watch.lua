-- Adds (or, with 0, removes) this relay among the key's watchers, and reads the key's
-- presence. While the watchers hash exists, every change of the total is published on
-- the key's channel (see set_presence in lib.lua). No lease: a dead relay's entry is
-- dropped with its counts (drop.lua).
-- ARGV: 1 relay, 2 watching (1/0).
-- Returns {connections on every live relay, Redis's clock in ms}.
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[6], ARGV[1], '1')
else
  redis.call('HDEL', KEYS[6], ARGV[1])
end
return {presence(), now_ms()}
