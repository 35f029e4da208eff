-- breaker.record_outcome over a batch: the outcomes one replica handed over for this breaker
-- since its last flush, in the order they finished.
-- ARGV after the policy: pairs (code, at): code = failed + 2 * probe, at = when it was recorded.
-- Reply: { view, transitions }.

local r = load()

-- breaker._count: a call into its one-second bucket; expired buckets go when a new second starts
local function count(second, failure)
  local bucket = r.buckets[second]
  if bucket == nil then
    for s, old in pairs(r.buckets) do
      if s <= second - P.window then
        r.calls, r.failed = r.calls - old[1], r.failed - old[2]
        r.buckets[s] = nil
      end
    end
    r.buckets[second] = { 1, failure }
  else
    r.buckets[second] = { bucket[1] + 1, bucket[2] + failure }
  end
  r.calls, r.failed = r.calls + 1, r.failed + failure
  r.dirty = true
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
    if P.failure_rate ~= 0 then
      count(math.floor(at), failed and 1 or 0)
    end
    local failures = failed and r.failures + 1 or 0
    if failures ~= r.failures then
      r.failures, r.dirty = failures, true -- a healthy breaker's batch writes nothing
    end
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
