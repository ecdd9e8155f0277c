-- Sets (or, with 0, removes) this relay's connection count under the key.
-- ARGV: 1 relay, 2 count, 3 lease ms.
set_presence(now_ms(), ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return 0
