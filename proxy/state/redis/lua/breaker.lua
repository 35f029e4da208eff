-- The rules of proxy/policy/breaker.py over one Redis hash. The store prepends this file to
-- admit.lua, record.lua and force.lua, so each script runs the same helpers atomically.
--
-- KEYS[1]  <prefix>{<breaker>}:breaker, the only key a script touches. Fields: state, failures,
--          open_until, reopens, probes, successes, reason, forced_by, changed_at, version, and
--          (failure-rate policies only) one "w:<second>" = "calls,failures" per second of the window.
-- ARGV     1 channel, 2 breaker name, 3 now, 4 random in [0, 1), then the policy:
--          5 consecutive_failures, 6 failure_rate, 7 window, 8 min_calls, 9 open_for,
--          10 open_for_max, 11 open_multiplier, 12 jitter, 13 half_open_probes; 14.. per script.
-- Reply    { view, transitions [, admission] }, every value a string:
--          view        = { state, open_until, reason, forced_by, failures, changed_at, version }
--          transitions = { { from, to, reason, at, open_until, forced_by }, ... }
--          admission   = { allowed "1"/"0", probe "1"/"0", retry_after }
-- Numbers travel as strings written with %.17g, so a double survives the round trip exactly
-- (Redis would truncate a Lua number in a reply to an integer). A script that makes a
-- transition also PUBLISHes the new view on the channel, in the order the transitions happen.

local KEY, CHANNEL, NAME = KEYS[1], ARGV[1], ARGV[2]
local NOW, RANDOM = tonumber(ARGV[3]), tonumber(ARGV[4])
local P = {
  consecutive_failures = tonumber(ARGV[5]), failure_rate = tonumber(ARGV[6]), window = tonumber(ARGV[7]),
  window_text = ARGV[7], min_calls = tonumber(ARGV[8]), open_for = tonumber(ARGV[9]),
  open_for_max = tonumber(ARGV[10]), open_multiplier = tonumber(ARGV[11]), jitter = tonumber(ARGV[12]),
  half_open_probes = tonumber(ARGV[13]),
}
local FIRST_EXTRA = 14

local SCALARS = { 'state', 'failures', 'open_until', 'reopens', 'probes', 'successes', 'reason', 'forced_by',
                  'changed_at', 'version' }
local TEXT = { state = true, reason = true, forced_by = true }

local function num(x)
  return string.format('%.17g', x)
end

local function bucket_field(second)
  return 'w:' .. string.format('%d', second)
end

local function load()
  local r = { state = 'closed', failures = 0, open_until = 0, reopens = 0, probes = 0, successes = 0, reason = '',
              forced_by = '', changed_at = 0, version = 0, buckets = {}, stored = {}, calls = 0, failed = 0,
              transitions = {}, dirty = false }
  local flat = redis.call('HGETALL', KEY)
  for i = 1, #flat, 2 do
    local field, value = flat[i], flat[i + 1]
    if string.sub(field, 1, 2) == 'w:' then
      local calls, failed = string.match(value, '^(%d+),(%d+)$')
      local second = tonumber(string.sub(field, 3))
      r.buckets[second] = { tonumber(calls), tonumber(failed) }
      r.stored[second] = value
      r.calls, r.failed = r.calls + tonumber(calls), r.failed + tonumber(failed)
    elseif TEXT[field] then
      r[field] = value
    else
      r[field] = tonumber(value)
    end
  end
  return r
end

local function save(r)
  local args = {}
  for _, field in ipairs(SCALARS) do
    args[#args + 1] = field
    args[#args + 1] = TEXT[field] and r[field] or num(r[field])
  end
  for second, bucket in pairs(r.buckets) do
    local value = string.format('%d,%d', bucket[1], bucket[2])
    if r.stored[second] ~= value then
      args[#args + 1] = bucket_field(second)
      args[#args + 1] = value
    end
  end
  redis.call('HSET', KEY, unpack(args))
  local gone = {}
  for second in pairs(r.stored) do
    if r.buckets[second] == nil then
      gone[#gone + 1] = bucket_field(second)
    end
  end
  if #gone > 0 then
    redis.call('HDEL', KEY, unpack(gone))
  end
end

-- breaker._move: the transition records open_until only when it opens
local function move(r, to, reason, at, forced_by)
  local open_until = '0'
  if to == 'open' then open_until = num(r.open_until) end
  r.transitions[#r.transitions + 1] = { r.state, to, reason, num(at), open_until, forced_by or '' }
  r.state, r.reason, r.changed_at = to, reason, at
  r.version = r.version + 1
  r.dirty = true
end

-- breaker._clear
local function clear(r)
  r.failures, r.probes, r.successes, r.reopens = 0, 0, 0, 0
  r.buckets, r.calls, r.failed = {}, 0, 0
  r.open_until = 0
  r.forced_by = ''
  r.dirty = true
end

-- breaker.open_duration
local function open_duration(reopens)
  local base = math.min(P.open_for * P.open_multiplier ^ reopens, math.max(P.open_for_max, P.open_for))
  return base * (1 + P.jitter * (2 * RANDOM - 1))
end

-- breaker._open
local function open(r, reason, reopens, at)
  local duration = open_duration(reopens)
  clear(r)
  r.reopens = reopens
  r.open_until = at + duration
  move(r, 'open', reason, at)
end

local function view(r)
  return { r.state, num(r.open_until), r.reason, r.forced_by, num(r.failures), num(r.changed_at), num(r.version) }
end

local function finish(r, admission)
  if r.dirty then save(r) end
  local v = view(r)
  if #r.transitions > 0 then
    redis.call('PUBLISH', CHANNEL, cjson.encode({
      key = NAME, state = v[1], open_until = v[2], reason = v[3], forced_by = v[4], failures = v[5],
      changed_at = v[6], version = v[7] }))
  end
  return { v, r.transitions, admission }
end
