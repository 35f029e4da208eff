-- settle: one attempt's outcome. Nothing changes when another consumer took the entry over after
-- the visibility timeout (it counted another attempt) or already settled it.
-- ARGV 1 stream id, 2 event id, 3 status (completed | failed | dead_letter), 4 now, 5 error,
--      6 due time of the next attempt (failed only), 7 the attempt being settled
-- Reply 1 settled, 0 not ours any more
local sid, id, status = ARGV[1], ARGV[2], ARGV[3]
local attempts = redis.call('HGET', log_key(id), 'a')
if attempts and attempts ~= ARGV[7] then
  return 0
end
if redis.call('XACK', STREAM, GROUP, sid) == 0 then
  return 0
end
redis.call('XDEL', STREAM, sid)
local extra = { 'e', ARGV[5] }
if status == 'completed' then
  extra = { 'e', '', 'c', ARGV[4] }
end
if not set_status(id, status, tonumber(ARGV[4]), extra) then
  return 1  -- its log entry expired: nothing left to record or retry
end
if status == 'failed' then
  redis.call('ZADD', DELAYED, ARGV[6], id)
  keep_for(DELAYED, redis.call('PTTL', log_key(id)))
end
return 1
