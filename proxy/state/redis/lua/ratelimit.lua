-- The rules of proxy/policy/ratelimit.py (spend, then decide) over every bucket of one request,
-- atomically: the request passes only when no enforcing limit rejects, and only then is anything
-- charged. RedisLimitStore.acquire runs it as one EVALSHA.
--
-- Times are whole microseconds, as in ratelimit.py. They stay below 2^53, so Lua's doubles hold
-- them exactly and every sum, difference and floor below equals Python's integer result.
--
-- KEYS     one per check: <prefix>{rl:<upstream>}:<bucket>, a string holding the bucket's TAT (the
--          theoretical arrival time, microseconds since the epoch). A missing key is a full bucket.
-- ARGV     1 now (the caller's clock, microseconds since the epoch), then three per key i, at
--          j = 2 + 3 * (i - 1): j interval, j + 1 tolerance (microseconds), j + 2 enforcing "1" or shadow "0".
-- Reply    one { allowed "1"/"0", remaining, reset, retry_after } per key, in KEYS order; reset and
--          retry_after in microseconds. Every number is a string written with %.17g, as the breaker
--          scripts reply (an integer below 2^53 prints whole, e.g. 1800000000250000).
-- Writes   only when the request passes: each allowed bucket's new TAT, with PX = ceil((tat - now) / 1000)
--          + 1 ms, so that a key expires once its bucket is full again and an idle bucket costs nothing.

local function num(x)
  return string.format('%.17g', x)
end

local now = tonumber(ARGV[1])
local replies, charged, rejected = {}, {}, false

for i, key in ipairs(KEYS) do
  local j = 2 + 3 * (i - 1)
  local interval, tolerance = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
  local stored = redis.call('GET', key)
  local tat = stored and tonumber(stored) or now
  if tat < now then
    tat = now
  end
  local allow_at = tat - tolerance
  if now < allow_at then
    replies[i] = { '0', '0', num(tat - now), num(allow_at - now) }
    rejected = rejected or ARGV[j + 2] == '1'
  else
    local new_tat = tat + interval
    local remaining = math.floor((now + tolerance - new_tat) / interval) + 1
    replies[i] = { '1', num(math.max(0, remaining)), num(new_tat - now), '0' }
    charged[i] = new_tat
  end
end

if not rejected then
  for i, key in ipairs(KEYS) do
    local tat = charged[i]
    if tat then
      redis.call('SET', key, num(tat), 'PX', num(math.ceil((tat - now) / 1000) + 1))
    end
  end
end
return replies
