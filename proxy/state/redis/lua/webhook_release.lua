-- release: hand claimed events back, their attempt not counted (a draining replica never started them).
-- ARGV 1 now, then triples of stream id, event id, attempt
-- Reply how many went back
local now, released = tonumber(ARGV[1]), 0
for i = 2, #ARGV, 3 do
  local sid, id = ARGV[i], ARGV[i + 1]
  local attempts = redis.call('HGET', log_key(id), 'a')
  if (not attempts or attempts == ARGV[i + 2]) and redis.call('XACK', STREAM, GROUP, sid) == 1 then
    redis.call('XDEL', STREAM, sid)
    if redis.call('EXISTS', log_key(id)) == 1 then
      local attempts = redis.call('HINCRBY', log_key(id), 'a', -1)
      set_status(id, attempts > 0 and 'failed' or 'pending', now, {})
      enqueue(id)
      released = released + 1
    end
  end
end
return released
