-- A liveness probe: published on the relay's own channel (the listener expects it
-- back), answered with Redis's clock in ms (publish deadlines are set in that clock).
-- ARGV: 1 the relay's probe channel.
redis.call('PUBLISH', ARGV[1], 'probe')
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
