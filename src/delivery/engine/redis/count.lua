-- Sets (or, with 0, removes) this relay's connection count under the key: run when it
-- changed, never to refresh it.
-- ARGV: 1 relay, 2 count.
set_presence(now_ms(), ARGV[1], tonumber(ARGV[2]))
return 0
