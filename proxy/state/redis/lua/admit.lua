-- breaker.admit: may a request pass now? Open breakers let probes through once their time is up.
-- ARGV as in breaker.lua, nothing after the policy. Reply: { view, transitions, admission }.

local r = load()
local state = r.state
if state == 'closed' or state == 'disabled' then
  return finish(r, { '1', '0', '0' })
end
if state == 'forced_open' then
  return finish(r, { '0', '0', num(P.open_for) })
end
if state == 'open' then
  if NOW < r.open_until then
    return finish(r, { '0', '0', num(r.open_until - NOW) })
  end
  move(r, 'half_open', 'open time elapsed', NOW)
  r.probes, r.successes = 1, 0
  r.open_until = NOW + P.open_for -- a probe that never reports gives its slot back then
  return finish(r, { '1', '1', '0' })
end
if r.probes < P.half_open_probes then
  r.probes = r.probes + 1
  r.dirty = true
  return finish(r, { '1', '1', '0' })
end
if NOW >= r.open_until then -- the admitted probes never reported (a replica died): try again
  r.probes, r.successes = 1, 0
  r.open_until = NOW + P.open_for
  r.dirty = true
  return finish(r, { '1', '1', '0' })
end
return finish(r, { '0', '0', num(math.max(r.open_until - NOW, 1.0)) })
