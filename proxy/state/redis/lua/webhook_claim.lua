-- claim: move due retries to the stream, take over entries idle past the visibility timeout
-- (their consumer died), then read new ones; mark each processing and count its attempt.
-- ARGV 1 consumer, 2 count, 3 visibility ms, 4 now, 5 prune: "1" also forgets consumers that hold
--      nothing and were idle past the visibility timeout (killed replicas; a consumer that asks
--      again comes back by itself), so the group does not grow with every restart
-- Reply { { stream id, event id, attempt, received_at, method, query, headers, body, verified }, ... }
local consumer, count, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, count)
for _, id in ipairs(due) do
  redis.call('ZREM', DELAYED, id)
  if redis.call('EXISTS', log_key(id)) == 1 then
    enqueue(id)
  end
end
if redis.call('EXISTS', STREAM) == 0 then
  return {}
end
local entries = {}
-- Each XAUTOCLAIM looks at a bounded stretch of the pending list; live consumers' recent claims may
-- come first, so follow the cursor a few steps (bounded: a claim never scans the whole list).
local cursor = '0-0'
for _ = 1, 8 do
  local taken = redis.call('XAUTOCLAIM', STREAM, GROUP, consumer, ARGV[3], cursor, 'COUNT', count - #entries)
  for _, entry in ipairs(taken[2]) do
    entries[#entries + 1] = entry
  end
  cursor = taken[1]
  if cursor == '0-0' or #entries >= count then
    break
  end
end
if #entries < count then
  local read = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', count - #entries, 'STREAMS', STREAM, '>')
  if read then
    for _, entry in ipairs(read[1][2]) do
      entries[#entries + 1] = entry
    end
  end
end
if ARGV[5] == '1' then
  for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', STREAM, GROUP)) do
    local fields = {}
    for i = 1, #info, 2 do
      fields[info[i]] = info[i + 1]
    end
    if fields.pending == 0 and fields.idle > tonumber(ARGV[3]) and fields.name ~= consumer then
      redis.call('XGROUP', 'DELCONSUMER', STREAM, GROUP, fields.name)
    end
  end
end
local out = {}
for _, entry in ipairs(entries) do
  local sid, fields = entry[1], entry[2]
  local id = type(fields) == 'table' and fields[2] or nil
  local payload = id and redis.call('HMGET', payload_key(id), 'm', 'q', 'h', 'b', 'v')
  if not payload or not payload[1] or redis.call('EXISTS', log_key(id)) == 0 then
    -- trimmed from the stream, or its payload expired: nothing left to deliver
    redis.call('XACK', STREAM, GROUP, sid)
    redis.call('XDEL', STREAM, sid)
    if id then
      set_status(id, 'dead_letter', now, { 'e', 'payload expired before delivery' })
    end
  else
    local key = log_key(id)
    local attempt = redis.call('HINCRBY', key, 'a', 1)
    set_status(id, 'processing', now, { 'l', ARGV[4] })
    out[#out + 1] = { sid, id, attempt, redis.call('HGET', key, 'r'), payload[1], payload[2], payload[3],
                      payload[4], payload[5] }
  end
end
return out
