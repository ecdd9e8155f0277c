-- A dead relay's entries under the key go: its connection count (the total follows, and
-- the key's watchers are told) and its place among the watchers. Run by the relay that
-- claimed the dead one (roster.rs), for every key in the dead relay's index.
-- ARGV: 1 the dead relay.
set_presence(now_ms(), ARGV[1], 0)
redis.call('HDEL', KEYS[6], ARGV[1])
return 0
