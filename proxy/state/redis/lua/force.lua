-- breaker.force: an operator's override; reset returns to closed with every count cleared.
-- ARGV after the policy: 14 action ("force-open", "disable" or "reset"), 15 actor.
-- Reply: { view, transitions } with exactly one transition.

local TARGETS = { ['force-open'] = 'forced_open', disable = 'disabled', reset = 'closed' }
local action, actor = ARGV[FIRST_EXTRA], ARGV[FIRST_EXTRA + 1]
local target = TARGETS[action]
if target == nil then
  return redis.error_reply('unknown breaker action ' .. tostring(action))
end
local r = load()
move(r, target, action .. ' by ' .. actor, NOW, actor)
clear(r)
if target ~= 'closed' then r.forced_by = actor end
return finish(r)
