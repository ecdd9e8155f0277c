-- Claims a relay whose heartbeat ran out: it leaves the roster, and exactly one claimant
-- (the one whose SREM took it) drops its entries, holding the claim meanwhile so that the
-- relay, should it come back, waits for that before writing its counts again. Returns 1
-- for the claimant, 0 when the relay is alive again or someone else claimed it.
-- KEYS: 1 the relays (set), 2 the relay's heartbeat, 3 the claim on it.
-- ARGV: 1 relay, 2 claim ms (a claimant that dies mid-way does not block the relay).
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return 1
