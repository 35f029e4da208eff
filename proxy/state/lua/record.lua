-- breaker.record_outcome over a batch: the outcomes one replica handed over for this breaker
-- since its last flush, in the order they finished.
-- ARGV after the policy: pairs (code, at): code = failed + 2 * probe, at = when it was recorded.
-- Reply: { view, transitions }.

local r = load()
local pruned_for = nil

-- the failure-rate window: only a new second can push buckets out of it (window >= 1)
local function prune(second)
  if second == pruned_for and P.window >= 1 then return end
  pruned_for = second
  for s, bucket in pairs(r.buckets) do
    if s <= second - P.window then
      r.calls, r.failed = r.calls - bucket[1], r.failed - bucket[2]
      r.buckets[s] = nil
    end
  end
end

-- breaker._trip_reason
local function trip_reason()
  if P.consecutive_failures ~= 0 and r.failures >= P.consecutive_failures then
    return tostring(r.failures) .. ' consecutive failures'
  end
  if P.failure_rate ~= 0 and r.calls >= P.min_calls and r.failed >= math.ceil(P.failure_rate * r.calls - 1e-9) then
    return string.format('failure rate %.0f%% over %ss (%d/%d calls)', r.failed / r.calls * 100, P.window_text,
                         r.failed, r.calls)
  end
  return nil
end

for i = FIRST_EXTRA, #ARGV, 2 do
  local code, at = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local failed, probe = code % 2 == 1, code >= 2
  if r.state == 'closed' and not probe then
    local second = math.floor(at)
    local bucket = r.buckets[second] or { 0, 0 }
    local failure = failed and 1 or 0
    r.buckets[second] = { bucket[1] + 1, bucket[2] + failure }
    r.calls, r.failed = r.calls + 1, r.failed + failure
    prune(second)
    if failed then r.failures = r.failures + 1 else r.failures = 0 end
    r.dirty = true
    local reason = trip_reason()
    if reason then
      open(r, reason, 0, at)
    end
  elseif r.state == 'half_open' and probe then
    if failed then
      open(r, 'probe failed', r.reopens + 1, at)
    else
      r.successes = r.successes + 1
      r.dirty = true
      if r.successes >= P.half_open_probes then
        move(r, 'closed', tostring(r.successes) .. ' probe(s) succeeded', at)
        clear(r)
      end
    end
  end
end
return finish(r)
