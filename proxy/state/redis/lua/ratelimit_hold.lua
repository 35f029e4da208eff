-- ratelimit.hold of proxy/policy/ratelimit.py over buckets of one upstream: let no call through them
-- for a while (the upstream said so). A bucket already held longer keeps its TAT.
--
-- KEYS     the buckets, as in ratelimit.lua.
-- ARGV     1 now, 2 how long to hold, then one per key i: 2 + i the bucket's tolerance; all in
--          microseconds, as in ratelimit.lua. The interval plays no part in a hold.
-- Reply    nothing.
-- Writes   TAT = now + hold + tolerance where the stored TAT is earlier, with PX as in ratelimit.lua
--          (at least 1 ms).

local now, hold = tonumber(ARGV[1]), tonumber(ARGV[2])

for i, key in ipairs(KEYS) do
  local held = now + hold + tonumber(ARGV[2 + i])
  local stored = redis.call('GET', key)
  local tat = stored and tonumber(stored)
  if not tat or tat < held then
    local px = math.max(1, math.ceil((held - now) / 1000) + 1)
    redis.call('SET', key, string.format('%.17g', held), 'PX', string.format('%.17g', px))
  end
end
return nil
