-- The inbound-webhook queue of one webhook. The store prepends this file to webhook_accept.lua,
-- webhook_claim.lua, webhook_settle.lua, webhook_release.lua, webhook_replay.lua and
-- webhook_stats.lua, so each script runs the same helpers atomically.
--
-- KEYS[1]  <prefix>{wh:<name>}:q, the delivery stream (consumer group "delivery", entries {i = event id}).
--          Every other key is derived from it and shares its hash tag, so one webhook's keys sit on
--          one Redis Cluster slot:
--   d:<digest>  dedupe key -> event id                      PX dedupe window
--               ("~" .. id: held while a sync-mode event is forwarded, PX the forward's time)
--   r:<digest>  the app's answer to a sync-mode event        PX dedupe window
--               s t b (status, content type, body)
--   p:<id>      payload hash m q h b v (method, query,      PX dedupe window
--               headers JSON, body, verified)
--   e:<id>      log hash s a r l c e o t x (status,         PX retention
--               attempts, received_at, last_attempt_at,
--               completed_at, error, org, event_type, index score)
--   s:<status>  index zset per status: id -> expiry time (received_at + retention, the caller's clock)
--   z           retries waiting for their time: id -> due time (the caller's clock)
-- Times in ARGV are the caller's clock (epoch seconds), so a FakeClock drives the rules; TTLs
-- are Redis's own. Nothing needs a cleanup job: keys expire, index members past their expiry
-- are trimmed on every write to their set, the sets, the stream and the retry zset expire when
-- nothing has written to them for as long as their longest member lives, and XADD trims
-- stream entries older than the retention (their log entries are gone).

local STREAM = KEYS[1]
local BASE = string.sub(STREAM, 1, -2)
local GROUP = 'delivery'
local DELAYED = BASE .. 'z'

local function log_key(id) return BASE .. 'e:' .. id end
local function payload_key(id) return BASE .. 'p:' .. id end
local function status_key(status) return BASE .. 's:' .. status end

-- Let ``key`` live at least ``ms`` more milliseconds.
local function keep_for(key, ms)
  ms = tonumber(ms)
  if ms and ms > 0 and redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

-- Put ``id`` (index score ``score``) under ``to``, out of ``from``.
local function move(id, from, to, score, now)
  if from and from ~= to then
    redis.call('ZREM', status_key(from), id)
  end
  local key = status_key(to)
  redis.call('ZADD', key, score, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  keep_for(key, redis.call('PTTL', log_key(id)))
end

local function ensure_stream()
  if redis.call('EXISTS', STREAM) == 0 then
    redis.call('XGROUP', 'CREATE', STREAM, GROUP, '$', 'MKSTREAM')
  end
end

-- Queue ``id`` for delivery now. The stream lives as long as the log entry does, so that an entry
-- whose payload expired is still read and dead-lettered, never left pending in the log;
-- ``trim_ms``: drop entries older than that (their log entries are gone too).
local function enqueue(id, trim_ms)
  ensure_stream()
  if trim_ms then
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('XADD', STREAM, 'MINID', '~', string.format('%d', now_ms - trim_ms), '*', 'i', id)
  else
    redis.call('XADD', STREAM, '*', 'i', id)
  end
  keep_for(STREAM, redis.call('PTTL', log_key(id)))
end

-- Set ``id``'s status (and the fields in ``extra``), keeping the index in step.
local function set_status(id, status, now, extra)
  local key = log_key(id)
  local old = redis.call('HGET', key, 's')
  if not old then
    return nil
  end
  redis.call('HSET', key, 's', status, unpack(extra))
  move(id, old, status, redis.call('HGET', key, 'x'), now)
  return old
end
