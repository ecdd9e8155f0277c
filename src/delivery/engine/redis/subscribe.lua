-- A registration (or a relay catching up after a reconnection): sets this relay's
-- presence, then hands over what the subscriber is owed, atomically with respect to
-- every publish of the key.
-- ARGV: 1 relay, 2 local connections, 3 mode (pending, since, none), 4 since (earliest,
-- latest, after, unknown), 5 since epoch, 6 since seq, 7 ttl ms, 8 max entries, 9 epoch
-- candidate.
-- Returns {epoch or '', end seq, gap seq or -1, {{seq, kind, payload}, ...}, evicted by
-- ttl, evicted by max}.
local now = now_ms()
set_presence(now, ARGV[1], tonumber(ARGV[2]))
local mode, since = ARGV[3], ARGV[4]
if mode == 'none' then
  return {'', 0, -1, {}, 0, 0}
end
local ttl, max = tonumber(ARGV[7]), tonumber(ARGV[8])
-- A cursor for a key with no history: it is lost, and the new stream says so.
local create = mode == 'since' and (since == 'after' or since == 'unknown')
local epoch, last, evicted, count, x, holes, created = open(ARGV[9], create)
if not epoch then
  return {'', 0, -1, {}, 0, 0}
end
-- Publishes only make room; expiry is applied here, before anything is handed out.
local by_ttl, by_max
by_ttl, by_max, count, evicted = trim(now, ttl, max, count, evicted)
local entries = {}
local function add(entry)
  local fields = entry[2]
  table.insert(entries, {seq_of(entry[1]), field(fields, 'f'), field(fields, 'p')})
end
local gap = -1
if mode == 'pending' then
  local seqs = redis.call('ZRANGE', KEYS[3], 0, -1)
  redis.call('DEL', KEYS[3])
  for _, seq in ipairs(seqs) do
    local found = redis.call('XRANGE', KEYS[2], seq .. '-0', seq .. '-0')
    if #found > 0 then
      add(found[1])
    end
  end
else
  local from, lost = 0, true
  if since == 'latest' then
    from, lost = last, false
  elseif since == 'earliest' then
    from, lost = 0, false
  elseif since == 'after' and ARGV[5] == epoch then
    local seq = tonumber(ARGV[6])
    if seq <= last and seq >= evicted then
      from, lost = seq, false
    end
  end
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '(' .. int(from) .. '-0', '+')) do
    add(entry)
  end
  -- What is replayed reached a connection: it is no longer pending.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '(' .. int(from), '+inf')
  if lost then
    if #entries > 0 then gap = entries[1][1] - 1 else gap = last end
  end
end
local pushed
pushed, x = stream_mark(now, ttl, x)
save_meta(true, epoch, last, evicted, count, x, holes)
expire_stream(pushed, x, ttl, false, false)
return {epoch, last, gap, entries, by_ttl, by_max}
