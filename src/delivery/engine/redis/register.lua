-- A relay joins the roster (or, after it lapsed, joins it again under the same id): it is
-- listed among the relays and its heartbeat is set. Returns 1 while another relay is
-- still dropping this relay's entries from an earlier lapse (its claim stands): the
-- relay writes its counts again only once that is over.
-- KEYS: 1 the relays (set), 2 this relay's heartbeat, 3 the claim on this relay.
-- ARGV: 1 relay, 2 heartbeat ms.
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return redis.call('EXISTS', KEYS[3])
