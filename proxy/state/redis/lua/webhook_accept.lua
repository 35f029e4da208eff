-- accept: dedupe, log and enqueue one event; or, with ARGV 7 "h", hold its dedupe key (sync mode).
-- ARGV 1 proposed id, 2 dedupe digest, 3 now, 4 dedupe window ms (hold: the hold's ms), 5 retention ms,
--      6 index score (received_at + retention), 7 delivered "1"/"0"/"h" (hold), 8 received_at, 9 org,
--      10 event_type, 11 method, 12 query, 13 headers JSON, 14 body, 15 verified,
--      16 kept answer's status ('' for none), 17 its content type, 18 its body
-- Reply { id, duplicate 1/0 [, kept status, content type, body] }
-- d:<digest> holds the event id, or "~" .. id while a sync-mode event is being forwarded (a hold);
-- accept with that same id takes the hold over.
local id, now, window_ms, retention_ms = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local dedupe = BASE .. 'd:' .. ARGV[2]
local kept_key = BASE .. 'r:' .. ARGV[2]
local existing = redis.call('GET', dedupe)
if existing and (ARGV[7] == 'h' or existing ~= '~' .. id) then
  if string.sub(existing, 1, 1) == '~' then
    return { string.sub(existing, 2), 1 }
  end
  local kept = redis.call('HMGET', kept_key, 's', 't', 'b')
  if kept[1] then
    return { existing, 1, kept[1], kept[2], kept[3] }
  end
  return { existing, 1 }
end
if ARGV[7] == 'h' then
  redis.call('SET', dedupe, '~' .. id, 'PX', window_ms)
  return { id, 0 }
end
redis.call('SET', dedupe, id, 'PX', window_ms)
local delivered = ARGV[7] == '1'
if delivered and ARGV[16] ~= '' then
  redis.call('HSET', kept_key, 's', ARGV[16], 't', ARGV[17], 'b', ARGV[18])
  redis.call('PEXPIRE', kept_key, window_ms)
end
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
