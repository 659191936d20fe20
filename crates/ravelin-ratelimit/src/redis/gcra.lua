-- Ravelin GCRA for one request's batch of checks, evaluated atomically by Redis in one round trip.
--
-- KEYS[i]   check i's bucket: a string holding its theoretical arrival time (TAT) as a decimal
--           integer of nanoseconds on the Redis server's clock.
-- ARGV      five integers per check i, at ARGV[5i-4 .. 5i]:
--             inc_us, inc_ns   T x cost, split into whole microseconds and the nanosecond rest
--                              (capped by the caller at tolerance + 1 ns: any more is denied anyway)
--             tol_us, tol_ns   the tolerance T x burst, split the same way
--             enforce          1 when a denial of this check blocks the request, 0 for a shadow rule
--
-- Semantics (those of RateLimitStore::check): every check is decided against the state before
-- the batch, at one instant `now`. When every enforcing check is allowed, every allowed check with
-- a non-zero cost stores its new TAT; otherwise nothing is written.
--
-- Returns {now_us, then per check: allowed (0|1), tat_us - now_us, tat_ns}, where tat is the TAT
-- the decision was taken against (never before now). The caller recomputes each decision from
-- these with the same arithmetic and rejects a reply that disagrees.
--
-- Arithmetic: Lua numbers are doubles, exact for integers below 2^53. Nanoseconds since 1970 need
-- 61 bits, so instants are (microseconds, nanoseconds 0..999) pairs; microseconds since 1970 plus
-- the largest tolerance (2^62 ns, about 4.6e15 us) stay below 2^53 until about the year 2220.
--
-- Time is the server's TIME, so every proxy sharing this Redis uses one clock. TIME in a script
-- that writes needs effects replication: the default since Redis 5 and the only mode since Redis 7;
-- older servers are switched to it here.
if redis.replicate_commands then
  pcall(redis.replicate_commands)
end

local n = #KEYS
if n == 0 or #ARGV ~= 5 * n then
  return redis.error_reply('ERR ravelin gcra: expected 5 arguments per key')
end

local function whole(v, max)
  local x = tonumber(v)
  if x == nil or x ~= x or x < 0 or x > max or x ~= math.floor(x) then
    return nil
  end
  return x
end

local LIMIT = 9007199254740991 -- 2^53 - 1

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local reply = {now}
local news = {}
local commit = true
for i = 1, n do
  local b = 5 * (i - 1)
  local inc_us, inc_ns = whole(ARGV[b + 1], LIMIT), whole(ARGV[b + 2], 999)
  local tol_us, tol_ns = whole(ARGV[b + 3], LIMIT), whole(ARGV[b + 4], 999)
  local enforce = ARGV[b + 5]
  if inc_us == nil or inc_ns == nil or tol_us == nil or tol_ns == nil
    or (enforce ~= '0' and enforce ~= '1') then
    return redis.error_reply('ERR ravelin gcra: bad arguments for key ' .. i)
  end

  -- The stored TAT. A missing key, an old TAT, or a value that is not a plain decimal integer of
  -- nanoseconds all mean "bucket full" (a foreign value is overwritten by the next allowed request).
  local tat_us, tat_ns = now, 0
  local stored = redis.call('GET', KEYS[i])
  if type(stored) == 'string' and #stored >= 4 and #stored <= 19 and not stored:find('%D') then
    local us, ns = tonumber(stored:sub(1, -4)), tonumber(stored:sub(-3))
    if us >= now then
      tat_us, tat_ns = us, ns
    end
  end
  -- A TAT further ahead than any allowed request can leave it (the server's clock stepped back,
  -- or someone wrote the key) counts as an empty bucket: no extra quota, and no lockout longer
  -- than one full refill.
  local ahead = tat_us - now
  if ahead > tol_us or (ahead == tol_us and tat_ns > tol_ns) then
    tat_us, tat_ns = now + tol_us, tol_ns
  end

  local new_us, new_ns = tat_us + inc_us, tat_ns + inc_ns
  if new_ns >= 1000 then
    new_us, new_ns = new_us + 1, new_ns - 1000
  end
  local lead = new_us - now
  local allowed = lead < tol_us or (lead == tol_us and new_ns <= tol_ns)
  if allowed then
    if inc_us > 0 or inc_ns > 0 then
      news[#news + 1] = {KEYS[i], new_us, new_ns, lead}
    end
  elseif enforce == '1' then
    commit = false
  end
  reply[#reply + 1] = allowed and 1 or 0
  reply[#reply + 1] = tat_us - now
  reply[#reply + 1] = tat_ns
end

if commit then
  for _, w in ipairs(news) do
    -- Expire when the bucket is full again, so an idle key means exactly what a missing key does
    -- and Redis holds only the keys active within one refill. Rounded up past the nanosecond
    -- rest, plus one millisecond because Redis times expiry from the script's start, a little
    -- before TIME: a key must never vanish while its TAT is still ahead (that would hand out
    -- quota early).
    local ttl_ms = math.floor(w[4] / 1000) + 2
    -- '%.0f' keeps every digit: Lua's default formatting rounds to 14 significant digits.
    redis.call('SET', w[1], string.format('%.0f%03d', w[2], w[3]), 'PX', ttl_ms)
  end
end
return reply
