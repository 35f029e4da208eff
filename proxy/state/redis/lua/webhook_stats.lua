-- stats: live index members by status, and when the oldest unfinished event was received.
-- ARGV 1 now
-- Reply { pending, processing, completed, failed, dead_letter, oldest received_at or '' }
local now = ARGV[1]
local out, oldest = {}, nil
for _, status in ipairs({ 'pending', 'processing', 'completed', 'failed', 'dead_letter' }) do
  local key = status_key(status)
  out[#out + 1] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
  if status == 'pending' or status == 'processing' or status == 'failed' then
    local first = redis.call('ZRANGEBYSCORE', key, '(' .. now, '+inf', 'LIMIT', 0, 1)
    if first[1] then
      local received = tonumber(redis.call('HGET', log_key(first[1]), 'r'))
      if received and (not oldest or received < oldest) then
        oldest = received
      end
    end
  end
end
out[#out + 1] = oldest and string.format('%.17g', oldest) or ''
return out
