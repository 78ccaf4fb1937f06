"""The Lua scripts that change a domain's shared admission state atomically, one call each.

Keys of one domain (a hash tag keeps them in one cluster slot):

* ``…:leases`` — sorted set: one member per request in flight anywhere, scored by the lease's
  expiry (ms, Redis server time). Expired members are purged at the start of every call, so a
  killed worker's slots come back within the lease TTL;
* ``…:state`` — hash: ``limit`` (the shared AIMD limit), ``epoch`` (bumped by every decrease, for
  "once per wave"), ``cool_until`` (ms: no admission before it), ``breaker``, ``waiting``
  (acquires refused and still waiting, so a release knows whether to announce freed slots);
* ``…:workers`` — hash: worker → until when it counts as active (1 s after its last call); the
  reply's ``active`` lets each worker aim at its share of the free slots instead of all of them.

``SYNC`` applies a batch of operations in order and returns the state after them. Operations come
as triples ``kind, a, b``:

* ``R member -`` release a lease;  ``A member counted`` acquire one (``counted``: this waiter is
  already in ``waiting``);  ``U - -`` a waiter gave up;
* ``C ms seen`` a 429 (or a probe, a spent quota) asks for a cooldown of ``ms``; ``cool_until``
  only grows; ``seen`` (the worker's wall-clock ms when it got the 429) travels with the
  message, so a receiver can tell how long the news took;
* ``L old:new:reason epoch`` a worker's AIMD changed its limit: an increase adds ``new - old``
  (so increases earned on different workers add up: one step per N successes anywhere); a
  decrease scales the shared limit by ``new / old`` once per wave (ignored when the request was
  admitted before the last decrease, ``epoch`` < the shared one); a ``ramp`` step sets it;
* ``B state -`` a worker's breaker changed state.

Every change other workers must act on is published on the domain's channel in the same call
(``c|until|now|seen|origin``, ``l|limit|epoch|origin``, ``b|state|origin``, ``s|origin`` for freed
slots while someone waits), so they learn of a cooldown within one pub/sub hop, not a poll.

``RENEW`` pushes the expiry of leases still held (``ZADD XX``: a lease already purged stays gone).
"""

from __future__ import annotations

SYNC = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local leases, state, workers = KEYS[1], KEYS[2], KEYS[3]
local channel, ttl, maxp = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local init, keep, origin = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local active_ms = 1000
local freed = redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local s = redis.call('HMGET', state, 'limit', 'epoch', 'cool_until', 'breaker', 'waiting')
local limit = math.min(tonumber(s[1]) or init, maxp)
local limit0 = limit
local epoch = tonumber(s[2]) or 0
local cool = tonumber(s[3]) or 0
local breaker = s[4] or 'closed'
local breaker0 = breaker
local waiting = tonumber(s[5]) or 0
local cooled = false
local seen_at = '0'
local grants = {}
for i = 7, #ARGV, 3 do
  local kind, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if kind == 'R' then
    freed = freed + redis.call('ZREM', leases, a)
  elseif kind == 'A' then
    local n = redis.call('ZCARD', leases)
    local ok = 0
    if now >= cool and breaker ~= 'open' and n < limit
        and (breaker ~= 'half_open' or n == 0) then
      ok = 1
      redis.call('ZADD', leases, now + ttl, a)
      if b == '1' then waiting = waiting - 1 end
    elseif b == '0' then
      waiting = waiting + 1
    end
    grants[#grants + 1] = ok
  elseif kind == 'U' then
    waiting = waiting - 1
  elseif kind == 'C' then
    local untill = now + tonumber(a)
    if untill > cool then cool = untill; cooled = true; seen_at = (b ~= '' and b) or '0' end
  elseif kind == 'L' then
    local old, new, reason = string.match(a, '^(%d+):(%d+):([%a_]+)$')
    old, new = tonumber(old), tonumber(new)
    if reason == 'ramp' then
      limit = math.max(1, math.min(maxp, new))
    elseif new > old then
      limit = math.min(maxp, limit + new - old)
    elseif new < old and tonumber(b) >= epoch then
      limit = math.max(1, math.floor(limit * new / old + 1e-9))
      epoch = epoch + 1
    end
  elseif kind == 'B' then
    breaker = a
  end
end
if waiting < 0 then waiting = 0 end
redis.call('HSET', workers, origin, now + active_ms)
local active = 0
local seen = redis.call('HGETALL', workers)
for i = 1, #seen, 2 do
  if tonumber(seen[i + 1]) > now then
    active = active + 1
  else
    redis.call('HDEL', workers, seen[i])
  end
end
redis.call('HSET', state, 'limit', limit, 'epoch', epoch, 'cool_until', cool,
  'breaker', breaker, 'waiting', waiting)
redis.call('PEXPIRE', state, keep)
redis.call('PEXPIRE', leases, keep)
redis.call('PEXPIRE', workers, keep)
if cooled then
  redis.call('PUBLISH', channel, 'c|' .. cool .. '|' .. now .. '|' .. seen_at .. '|' .. origin)
end
if limit ~= limit0 then
  redis.call('PUBLISH', channel, 'l|' .. limit .. '|' .. epoch .. '|' .. origin)
end
if breaker ~= breaker0 then redis.call('PUBLISH', channel, 'b|' .. breaker .. '|' .. origin) end
if freed > 0 and waiting > 0 then redis.call('PUBLISH', channel, 's|' .. origin) end
return {grants, limit, epoch, redis.call('ZCARD', leases), cool, breaker, now, waiting, active}
"""

RENEW = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
return renewed
"""
