-- accept: dedupe, log and enqueue one event.
-- ARGV 1 proposed id, 2 dedupe digest, 3 now, 4 dedupe window ms, 5 retention ms, 6 index score
--      (received_at + retention), 7 delivered "1"/"0", 8 received_at, 9 org, 10 event_type,
--      11 method, 12 query, 13 headers JSON, 14 body, 15 verified
-- Reply { id, duplicate 1/0 }
local id, now, window_ms, retention_ms = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local dedupe = BASE .. 'd:' .. ARGV[2]
local existing = redis.call('GET', dedupe)
if existing then
  return { existing, 1 }
end
redis.call('SET', dedupe, id, 'PX', window_ms)
local delivered = ARGV[7] == '1'
local status = delivered and 'completed' or 'pending'
local at = delivered and ARGV[3] or ''
local key = log_key(id)
redis.call('HSET', key, 's', status, 'a', delivered and 1 or 0, 'r', ARGV[8], 'l', at, 'c', at, 'e', '',
           'o', ARGV[9], 't', ARGV[10], 'x', ARGV[6])
redis.call('PEXPIRE', key, retention_ms)
move(id, nil, status, ARGV[6], now)
if not delivered then
  local payload = payload_key(id)
  redis.call('HSET', payload, 'm', ARGV[11], 'q', ARGV[12], 'h', ARGV[13], 'b', ARGV[14], 'v', ARGV[15])
  redis.call('PEXPIRE', payload, window_ms)
  enqueue(id, retention_ms)
end
return { id, 0 }
