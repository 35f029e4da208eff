-- replay: finished or failing events -> pending, attempts from 0, queued now.
-- ARGV 1 now, then event ids
-- Reply how many were replayed (an event in delivery or waiting, or whose payload expired, is not)
local now, replayed = tonumber(ARGV[1]), 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local status = redis.call('HGET', log_key(id), 's')
  local ttl = redis.call('PTTL', payload_key(id))
  if status and ttl > 0 and (status == 'failed' or status == 'completed' or status == 'dead_letter') then
    redis.call('ZREM', DELAYED, id)
    set_status(id, 'pending', now, { 'a', 0, 'e', '', 'c', '', 'l', '' })
    enqueue(id)
    replayed = replayed + 1
  end
end
return replayed
