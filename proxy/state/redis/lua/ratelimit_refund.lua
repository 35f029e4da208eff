-- Give back what ratelimit.lua charged a request that a limit on another cluster slot denied (see
-- proxy/state/redis/limit_shards.py: the amount never exceeds what the charge still holds).
--
-- KEYS     the buckets to refund, as in ratelimit.lua (one slot).
-- ARGV     1 now, then one per key i: 1 + i the microseconds to give back (at most one interval).
-- Reply    nothing.
-- Writes   TAT - amount with PX as in ratelimit.lua; a bucket that is full again is deleted.

local now = tonumber(ARGV[1])

for i, key in ipairs(KEYS) do
  local stored = redis.call('GET', key)
  if stored then
    local tat = tonumber(stored) - tonumber(ARGV[1 + i])
    if tat <= now then
      redis.call('DEL', key)
    else
      redis.call('SET', key, string.format('%.17g', tat), 'PX', string.format('%.17g', math.ceil((tat - now) / 1000) + 1))
    end
  end
end
return nil
