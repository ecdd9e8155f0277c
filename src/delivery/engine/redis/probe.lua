-- A liveness probe: published on one of the relay's probe channels (the listener expects
-- it back on the connection to the channel's shard), answered with Redis's clock in ms
-- (publish deadlines are set in that clock).
-- KEYS: 1 the probe channel (declared as a key so that a cluster runs the script on the
-- channel's shard). ARGV: 1 the publish command (PUBLISH, or SPUBLISH on a cluster).
redis.call(ARGV[1], KEYS[1], 'probe')
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
