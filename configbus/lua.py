"""The server-side scripts. Each runs atomically in Redis, so no reader can ever observe a
half-done publish: head moves in the same step that writes its record.

Record keys (`<prefix><n>`) are computed inside the scripts; they share the namespace's hash
tag with every declared key, so a Redis Cluster keeps them all on one slot.
"""

# KEYS: seq, head, epoch, history, audit, idempotency
# ARGV: expected ('' = any), body, sha256, new epoch, author, message, kind, source ('' = none),
#       retention, idempotency ttl, audit maxlen, channel, record prefix, use idempotency ('1'/'0'),
#       request fingerprint ('' = the body's sha256: a retry is the same request, not the same
#       body, since a body rebuilt from a head that moved meanwhile may differ)
PUBLISH = r"""
local expected, body, sha = ARGV[1], ARGV[2], ARGV[3]
local author, message, kind, source = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local prefix, use_idem = ARGV[13], ARGV[14] == '1'
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])

local function audit(outcome, version, parent)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[11], '*',
    'ts', now, 'action', kind, 'actor', author, 'outcome', outcome,
    'version', version, 'parent', parent, 'message', message, 'source', source)
end

local request = ARGV[15]
if request == nil or request == '' then request = sha end
if use_idem then
  local prev = redis.call('HMGET', KEYS[6], 'version', 'sha256', 'epoch', 'request')
  if prev[1] then
    if (prev[4] or prev[2]) ~= request then
      audit('idempotency_mismatch', prev[1], '')
      return {'idempotency_mismatch', prev[1], prev[3], prev[2]}
    end
    return {'idempotent', prev[1], prev[3], prev[2]}
  end
end

local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = redis.call('GET', KEYS[3])
if expected ~= '' and tonumber(expected) ~= head then
  audit('conflict', tostring(head), expected)
  return {'conflict', tostring(head), epoch or '', ''}
end

if head > 0 and redis.call('HGET', prefix .. head, 'sha256') == sha then
  if use_idem then
    redis.call('HSET', KEYS[6], 'version', head, 'sha256', sha, 'epoch', epoch, 'request', request)
    redis.call('EXPIRE', KEYS[6], ARGV[10])
  end
  audit('noop', tostring(head), tostring(head))
  return {'noop', tostring(head), epoch, sha}
end

if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
end
local version = redis.call('INCR', KEYS[1])
if version <= head then
  -- The counter was lost while head survived: never reuse a number.
  version = head + 1
  redis.call('SET', KEYS[1], version)
end

redis.call('HSET', prefix .. version,
  'version', version, 'parent', head, 'epoch', epoch, 'sha256', sha, 'author', author,
  'message', message, 'created_at', now, 'kind', kind, 'source', source, 'body', body)
redis.call('SET', KEYS[2], version)
redis.call('ZADD', KEYS[4], version, version)

local retention = tonumber(ARGV[9])
local n = redis.call('ZCARD', KEYS[4])
if n > retention then
  local old = redis.call('ZRANGE', KEYS[4], 0, n - retention - 1)
  for _, v in ipairs(old) do
    if tonumber(v) ~= version then redis.call('DEL', prefix .. v) end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, n - retention - 1)
end

if use_idem then
  redis.call('HSET', KEYS[6], 'version', version, 'sha256', sha, 'epoch', epoch, 'request', request)
  redis.call('EXPIRE', KEYS[6], ARGV[10])
end
audit('created', tostring(version), tostring(head))
redis.call('PUBLISH', ARGV[12],
  '{"version":' .. version .. ',"sha256":"' .. sha .. '","epoch":"' .. epoch .. '"}')
return {'created', tostring(version), epoch, sha}
"""

# KEYS: head, epoch
# ARGV: record prefix, known epoch, known version, known sha256 ('*': any), head only ('1'/'0')
# Returns {head, epoch, sha} when there is nothing to fetch: head is what the caller holds
# (same epoch, version and sha), or older than it (a store that lost versions). Else
# {head, epoch, sha, field, value, ...} of head's record, read in the same atomic step;
# {head, epoch, false, 'missing'} when head points at no record.
FETCH_HEAD = r"""
local head = redis.call('GET', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
if not head then return {false, epoch, false} end
local sha = redis.call('HGET', ARGV[1] .. head, 'sha256')
if not sha then return {head, epoch, false, 'missing'} end
if ARGV[5] == '1' then return {head, epoch, sha} end
if epoch == ARGV[2] then
  local h, k = tonumber(head), tonumber(ARGV[3])
  if h < k or (h == k and (ARGV[4] == '*' or sha == ARGV[4])) then
    return {head, epoch, sha}
  end
end
local out = {head, epoch, sha}
local rec = redis.call('HGETALL', ARGV[1] .. head)
for i = 1, #rec do out[#out + 1] = rec[i] end
return out
"""

# KEYS: replicas
# ARGV: replica id, status JSON (without last_seen)
# Stamps last_seen with the Redis server's clock, so liveness never depends on replica clocks.
HEARTBEAT = r"""
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
redis.call('HSET', KEYS[1], ARGV[1], '{"last_seen":' .. now .. ',' .. string.sub(ARGV[2], 2))
return now
"""

# KEYS: replicas
# Returns {server seconds, microseconds, id, status, id, status, ...}: the statuses and the
# clock they are judged by, in one step (a pipeline with TIME cannot run on a cluster).
REPLICAS = r"""
local t = redis.call('TIME')
local out = {t[1], t[2]}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
"""

# KEYS: seq, head, epoch, history, audit
# ARGV: record prefix, channel, actor, epoch, head, n, then n groups of field count + fields
# Re-seeds an empty namespace from an export; refuses when the namespace has a head.
IMPORT = r"""
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'not_empty', redis.call('GET', KEYS[2])}
end
local prefix, epoch, head, n = ARGV[1], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local i = 7
local maxv = head
for _ = 1, n do
  local count = tonumber(ARGV[i])
  local fields = {}
  for j = 1, count do fields[j] = ARGV[i + j] end
  local version
  for j = 1, count, 2 do if fields[j] == 'version' then version = fields[j + 1] end end
  redis.call('HSET', prefix .. version, (table.unpack or unpack)(fields))
  redis.call('ZADD', KEYS[4], version, version)
  if tonumber(version) > maxv then maxv = tonumber(version) end
  i = i + count + 1
end
redis.call('SET', KEYS[3], epoch)
redis.call('SET', KEYS[2], head)
redis.call('SET', KEYS[1], maxv)
local t = redis.call('TIME')
redis.call('XADD', KEYS[5], '*', 'ts', t[1] .. '.' .. string.format('%06d', t[2]),
  'action', 'import', 'actor', ARGV[3], 'outcome', 'created', 'version', head,
  'parent', '', 'message', 'import of ' .. n .. ' versions', 'source', '')
local sha = redis.call('HGET', prefix .. head, 'sha256')
redis.call('PUBLISH', ARGV[2],
  '{"version":' .. head .. ',"sha256":"' .. sha .. '","epoch":"' .. epoch .. '"}')
return {'imported', tostring(head)}
"""
