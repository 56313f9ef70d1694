"""The server-side scripts. Each runs atomically in Redis, so no reader can ever observe a
half-done publish: head moves in the same step that writes its record.

Record keys (`<prefix><n>`) are computed inside the scripts; they share the namespace's hash
tag with every declared key, so a Redis Cluster keeps them all on one slot.
"""

from configbus.durability import FENCE_FN, REPORTED_TOP

# KEYS: seq, head, epoch, history, audit, idempotency, rollout, rev, replicas, server, fence,
#       reported
# ARGV: expected ('' = any), body, sha256, new epoch, author, message, kind, source ('' = none),
#       retention, idempotency ttl, audit maxlen, channel, record prefix, use idempotency ('1'/'0'),
#       request fingerprint ('' = the body's sha256: a retry is the same request, not the same
#       body, since a body rebuilt from a head that moved meanwhile may differ),
#       rollout id ('' = a plain publish that moves head), rollout doc JSON, label selectors
#       (one `k=v,k=v` per line), members (`\n`-framed replica ids), inline limit (bytes;
#       0 = never), traceparent ('' = none), the admin's signature ('' = none: see
#       `configbus.signing`; hex, checked by the caller), check the failover fence first
#       ('1'/'0': configbus.durability.FENCE_FN; {'fenced', pending, ms} while it holds)
# A plain publish whose body is at most the inline limit carries the whole record in its
# hint: the JSON header, a newline, the body. Replicas still check it (checksum, epoch,
# version) and fetch when it does not fit; a rollout's hint never carries a body, since
# only the replicas its stage selects may run that version.
# A plain publish is refused while a rollout runs; a rollout writes its version without
# moving head and records the rollout in the same step.
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

-- A version number as stored: digits only, at most 2^53 (what a JSON number holds exactly).
-- Anything else in head or seq was written by something that bypassed the admin.
local function num(v)
  if type(v) ~= 'string' or #v > 16 or not string.match(v, '^%d+$') then return nil end
  local n = tonumber(v)
  if n > 9007199254740992 then return nil end
  return n
end
local function str(n) return string.format('%d', n) end

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

local rollout_id = ARGV[16] or ''
local running = redis.call('HMGET', KEYS[7], 'state', 'id', 'version')
if running[1] == 'running' then
  audit('rollout_running', running[3], '')
  return {'rollout_running', running[3], running[2], ''}
end

local raw_head = redis.call('GET', KEYS[2])
local head = 0
if raw_head then head = num(raw_head) end
local epoch = redis.call('GET', KEYS[3])
if not head then
  -- A damaged head: only a publish that does not name a base version may replace it.
  if expected ~= '' then
    audit('damaged', '', expected)
    return {'damaged', '0', epoch or '', raw_head}
  end
  head = 0
end
if expected ~= '' and tonumber(expected) ~= head then
  audit('conflict', str(head), expected)
  return {'conflict', str(head), epoch or '', ''}
end

if head > 0 and redis.call('HGET', prefix .. str(head), 'sha256') == sha then
  if use_idem then
    redis.call('HSET', KEYS[6], 'version', str(head), 'sha256', sha, 'epoch', epoch,
      'request', request)
    redis.call('EXPIRE', KEYS[6], ARGV[10])
  end
  audit('noop', str(head), str(head))
  return {'noop', str(head), epoch, sha}
end

if ARGV[23] == '1' then
  local pending, left = fence(epoch, KEYS[9], KEYS[10], KEYS[11], t)
  if pending > 0 then return {'fenced', str(pending), str(left), ''} end
end
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
end
-- Never reuse a number: above the counter, head, every indexed version and every version a
-- replica reports (a version the server lost: configbus.durability), and past any record
-- left where the index does not reach (a counter lost, a head moved back).
local top = redis.call('ZREVRANGE', KEYS[4], 0, 0, 'WITHSCORES')
local n = math.max(num(redis.call('GET', KEYS[1]) or '0') or 0, head, tonumber(top[2] or '0') or 0,
  reported_top(epoch, KEYS[12], KEYS[9])) + 1
for _ = 1, 1000 do
  if redis.call('EXISTS', prefix .. str(n)) == 0 then break end
  n = n + 1
end
if n > 9007199254740992 or redis.call('EXISTS', prefix .. str(n)) == 1 then
  audit('damaged', '', str(head))
  return {'damaged', '0', epoch, 'no free version number'}
end
local version = str(n)
redis.call('SET', KEYS[1], version)
head = str(head)

local sig = ARGV[22] or ''
redis.call('HSET', prefix .. version,
  'version', version, 'parent', head, 'epoch', epoch, 'sha256', sha, 'author', author,
  'message', message, 'created_at', now, 'kind', kind, 'source', source, 'sig', sig,
  'body', body)
if rollout_id == '' then redis.call('SET', KEYS[2], version) end
redis.call('ZADD', KEYS[4], version, version)

local retention = tonumber(ARGV[9])
local n = redis.call('ZCARD', KEYS[4])
if n > retention then
  local old = redis.call('ZRANGE', KEYS[4], 0, n - retention - 1)
  for _, v in ipairs(old) do
    -- Head is never trimmed: the version just written, or the head a rollout keeps.
    if v ~= version and not (rollout_id ~= '' and v == head) then
      redis.call('DEL', prefix .. v)
      redis.call('ZREM', KEYS[4], v)
    end
  end
end

local rev = str((num(redis.call('GET', KEYS[8]) or '0') or 0) + 1)
redis.call('SET', KEYS[8], rev)
local hint = '{"version":' .. version .. ',"sha256":"' .. sha .. '","epoch":"' .. epoch ..
  '","rev":' .. rev
-- The publisher's trace context (checked by the caller: 55 chars of hex and dashes).
if (ARGV[21] or '') ~= '' then hint = hint .. ',"traceparent":"' .. ARGV[21] .. '"' end
if rollout_id ~= '' then
  redis.call('DEL', KEYS[7])
  redis.call('HSET', KEYS[7], 'id', rollout_id, 'state', 'running', 'version', version,
    'sha256', sha, 'epoch', epoch, 'base', head, 'stage', 0, 'doc', ARGV[17],
    'match', ARGV[18], 'members', ARGV[19])
  hint = hint .. ',"rollout":true'
end

if use_idem then
  redis.call('HSET', KEYS[6], 'version', version, 'sha256', sha, 'epoch', epoch, 'request', request)
  redis.call('EXPIRE', KEYS[6], ARGV[10])
end
audit('created', version, head)
local inline = tonumber(ARGV[20] or '0') or 0
if rollout_id == '' and #body <= inline then
  hint = hint .. ',"parent":' .. head .. ',"created_at":' .. now .. ',"kind":' ..
    cjson.encode(kind) .. ',"author":' .. cjson.encode(author) .. ',"message":' ..
    cjson.encode(message) .. (source ~= '' and (',"source":' .. source) or '') ..
    (sig ~= '' and (',"sig":"' .. sig .. '"') or '') .. '}\n' .. body
else
  hint = hint .. '}'
end
redis.call('PUBLISH', ARGV[12], hint)
return {'created', version, epoch, sha}
"""
PUBLISH = FENCE_FN + REPORTED_TOP + PUBLISH  # the functions it calls

# KEYS: head, epoch
# ARGV: record prefix, known epoch, known version, known sha256 ('*': any), head only ('1'/'0')
# Returns {head, epoch, sha} when there is nothing to fetch: head is what the caller holds
# (same epoch, version and sha), or older than it (a store that lost versions). Else
# {head, epoch, sha, field, value, ...} of head's record, read in the same atomic step;
# {head, epoch, false, 'missing'} when head points at no record, {head, epoch, false,
# 'damaged'} when head is not a number.
FETCH_HEAD = r"""
local head = redis.call('GET', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
if not head then return {false, epoch, false} end
if #head > 16 or not string.match(head, '^%d+$') then return {head, epoch, false, 'damaged'} end
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
# Returns {server seconds, microseconds, id, status, id, status, ...}: the statuses and the
# clock they are judged by, in one step (a pipeline with TIME cannot run on a cluster).
REPLICAS = r"""
local t = redis.call('TIME')
local out = {t[1], t[2]}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
"""

# KEYS: seq, head, epoch, history, audit, rev
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
redis.call('SET', KEYS[2], string.format('%d', head))
redis.call('SET', KEYS[1], string.format('%d', maxv))
local t = redis.call('TIME')
redis.call('XADD', KEYS[5], '*', 'ts', t[1] .. '.' .. string.format('%06d', t[2]),
  'action', 'import', 'actor', ARGV[3], 'outcome', 'created', 'version', head,
  'parent', '', 'message', 'import of ' .. n .. ' versions', 'source', '')
local sha = redis.call('HGET', prefix .. string.format('%d', head), 'sha256')
local rev = (tonumber(redis.call('GET', KEYS[6]) or '0') or 0) + 1
redis.call('SET', KEYS[6], string.format('%d', rev))
redis.call('PUBLISH', ARGV[2], '{"version":' .. head .. ',"sha256":"' .. sha .. '","epoch":"' ..
  epoch .. '","rev":' .. string.format('%d', rev) .. '}')
return {'imported', string.format('%d', head)}
"""

# KEYS: head, epoch, rollout, rev
# ARGV: record prefix, held epoch, held version, held sha256, held version came from a
#       rollout ('1'/'0'), rejected `version:sha256` ('' = none; sha '*' = any), replica id,
#       then the replica's labels as `k=v`
# The version this replica should run is the rollout's when the running rollout selects it
# (a member, or every pair of one of the stage's label selectors among its labels), else
# head. Returns {head, epoch, target, target sha, in rollout, rollout running, rev} when
# there is nothing to fetch (the target is what the caller holds or rejected, or older than what it
# holds from head: a store that lost versions); else the same followed by the target's
# record fields; {head, epoch, target, false, ...} when the target has no record. `rev`
# counts the namespace's changes (publishes and rollout steps): a read replica whose rev is
# behind one a hint named is lagging. Read-only, so it runs on a read replica too.
SYNC_READ = r"""
local head = redis.call('GET', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
local rev = tonumber(redis.call('GET', KEYS[4]) or '0')
if not head then return {false, epoch, false, false, 0, 0, rev} end
local target, staged, active = head, 0, 0
local r = redis.call('HMGET', KEYS[3], 'state', 'version', 'epoch', 'match', 'members')
if r[1] == 'running' and r[3] == epoch then
  active = 1
  local mine = ARGV[7] ~= '' and r[5] and string.find(r[5], '\n' .. ARGV[7] .. '\n', 1, true)
  if not mine and r[4] then
    local have = {}
    for i = 8, #ARGV do have[ARGV[i]] = true end
    for sel in string.gmatch(r[4], '[^\n]+') do
      mine = true
      for pair in string.gmatch(sel, '[^,]+') do
        if not have[pair] then mine = false; break end
      end
      if mine then break end
    end
  end
  if mine then target = r[2]; staged = 1 end
end
local sha = redis.call('HGET', ARGV[1] .. target, 'sha256')
local out = {head, epoch, target, sha, staged, active, rev}
if not sha then return out end
if epoch == ARGV[2] then
  local t, k = tonumber(target), tonumber(ARGV[3])
  if t == k and sha == ARGV[4] then return out end
  if t < k and staged == 0 and ARGV[5] ~= '1' then return out end
end
if ARGV[6] ~= '' then
  local rv, rsha = string.match(ARGV[6], '^(%d+):(.*)$')
  if epoch == ARGV[2] and tonumber(rv) == tonumber(target) and (rsha == '*' or rsha == sha) then
    return out
  end
end
local rec = redis.call('HGETALL', ARGV[1] .. target)
for i = 1, #rec do out[#out + 1] = rec[i] end
return out
"""

# KEYS: rollout, head, lease, rev
# ARGV: action ('advance' | 'promote' | 'abort'), rollout id, expected stage ('' = any),
#       lease holder ('' = a person acting through the API: no lease needed), new doc JSON,
#       new label selectors, new members, channel, new stage, traceparent ('' = none)
# Every step checks that the rollout is the one the caller judged, still running and at the
# stage it judged, so two admins can never promote twice or act on a stale view. Promote
# moves head to the rollout's version only from the head the rollout started on.
ROLLOUT_STEP = r"""
local action, id, stage, holder = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local r = redis.call('HMGET', KEYS[1], 'id', 'state', 'stage', 'version', 'sha256', 'epoch',
  'base')
if r[1] ~= id then return {'gone', r[2] or ''} end
if r[2] ~= 'running' then return {'ended', r[2]} end
if stage ~= '' and r[3] ~= stage then return {'moved', r[3]} end
if holder ~= '' and redis.call('GET', KEYS[3]) ~= holder then return {'not_leader', ''} end
local state = 'running'
if action == 'promote' then
  if (redis.call('GET', KEYS[2]) or '0') ~= r[7] then return {'head_moved', r[7]} end
  redis.call('SET', KEYS[2], r[4])
  state = 'promoted'
elseif action == 'abort' then
  state = 'aborted'
end
redis.call('HSET', KEYS[1], 'state', state, 'stage', ARGV[9], 'doc', ARGV[5],
  'match', ARGV[6], 'members', ARGV[7])
local v = r[4]
if action == 'abort' then v = r[7] end
local rev = redis.call('INCR', KEYS[4])
local tp = ''
if (ARGV[10] or '') ~= '' then tp = ',"traceparent":"' .. ARGV[10] .. '"' end
redis.call('PUBLISH', ARGV[8], '{"version":' .. v .. ',"sha256":"","epoch":"' .. r[6] ..
  '","rev":' .. rev .. ',"rollout":true' .. tp .. '}')
return {state, r[4]}
"""

# KEYS: lease
# ARGV: holder, ttl ms
# Take the lease when free, or extend it when already ours; answers who holds it.
LEASE = r"""
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
"""

# KEYS: entries, by hash, rev, epoch, log, audit
# ARGV: id, expected ('' = must not exist, '*' = any, else the entry's revision), entry JSON
#       without revision ('' = revoke), hashes to own (space separated), hashes to let go,
#       new epoch (used when the collection has none), log cap, audit action, actor, audit
#       maxlen, channel, inline limit (bytes), audit detail
# One change of the client key collection, whole or not at all: check, bump the revision,
# write the entry and the hash index, log the change, audit it, hint it. Returns
# {'ok', rev, epoch}, or {'exists' | 'not_found' | 'conflict' | 'hash_taken', detail}.
KEY_CHANGE = r"""
local id, expected, entry = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', KEYS[1], id)
local function refuse(what, detail)
  local t = redis.call('TIME')
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[10], '*',
    'ts', t[1] .. '.' .. string.format('%06d', t[2]), 'action', ARGV[8], 'actor', ARGV[9],
    'outcome', what, 'key_id', id, 'detail', ARGV[13])
  return {what, detail}
end
if expected == '' then
  if cur then return refuse('exists', id) end
elseif not cur then
  return refuse('not_found', id)
elseif expected ~= '*' then
  local have = string.match(cur, '^{"revision":(%d+),')
  if have ~= expected then return refuse('conflict', have or '') end
end
for h in string.gmatch(ARGV[4], '%S+') do
  local owner = redis.call('HGET', KEYS[2], h)
  if owner and owner ~= id then return refuse('hash_taken', owner) end
end
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[6]
  redis.call('SET', KEYS[4], epoch)
end
local rev = redis.call('INCR', KEYS[3])
for h in string.gmatch(ARGV[5], '%S+') do
  if redis.call('HGET', KEYS[2], h) == id then redis.call('HDEL', KEYS[2], h) end
end
for h in string.gmatch(ARGV[4], '%S+') do redis.call('HSET', KEYS[2], h, id) end
local stored = 'null'
if entry ~= '' then
  stored = '{"revision":' .. rev .. ',' .. string.sub(entry, 2)
  redis.call('HSET', KEYS[1], id, stored)
else
  redis.call('HDEL', KEYS[1], id)
end
local change = '{"rev":' .. rev .. ',"id":"' .. id .. '","entry":' .. stored .. '}'
redis.call('ZADD', KEYS[5], rev, change)
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(tonumber(ARGV[7]) + 1))
local t = redis.call('TIME')
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[10], '*',
  'ts', t[1] .. '.' .. string.format('%06d', t[2]), 'action', ARGV[8], 'actor', ARGV[9],
  'outcome', 'ok', 'key_id', id, 'revision', rev, 'detail', ARGV[13])
local hint = '{"epoch":"' .. epoch .. '","rev":' .. rev .. '}'
if #change <= tonumber(ARGV[12]) then hint = hint .. '\n' .. change end
redis.call('PUBLISH', ARGV[11], hint)
return {'ok', rev, epoch}
"""

# KEYS: epoch, rev, log
# ARGV: held revision, most changes to return
# Where the collection is ({epoch, rev}) and the changes after the held revision, oldest
# first; {epoch, rev, 'gap'} when the log no longer reaches back that far (or there are more
# than asked for): the caller reloads whole. Read-only.
KEY_READ = r"""
local epoch = redis.call('GET', KEYS[1])
local rev = tonumber(redis.call('GET', KEYS[2]) or '0')
local held, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {epoch, rev}
if rev <= held then return out end
if rev - held > most then out[3] = 'gap'; return out end
local changes = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. held, '+inf')
local first = changes[1] and tonumber(string.match(changes[1], '^{"rev":(%d+),'))
if first ~= held + 1 then out[3] = 'gap'; return out end
for i = 1, #changes do out[#out + 1] = changes[i] end
return out
"""

# KEYS: over-budget hash, its revision, the flushing replica's last batch, then per bucket a
#       (minute bucket, day bucket) pair, then one spend counter per budget charged
# ARGV: minute bucket ttl s, day bucket ttl s, the over-budget revision the caller holds,
#       now (unix s), buckets, spend counters, batch number (0: nothing to count), batch
#       key ttl s; then per bucket: its field count and that many (field, increment) pairs;
#       then per spend counter: increment (micro-USD), limit (micro-USD), ttl s (0 = none),
#       over-budget member, the period's end (unix s, 0 = none)
# One replica's usage since its last flush, in one step: bucket fields are incremented in
# the minute's and the day's bucket; each spend counter is incremented, and a counter at or
# over its limit is recorded in the over-budget hash (`member` → "total end"), which then
# gets a new revision (and loses the members whose period ended). A batch numbered no
# higher than the replica's last is a retry of one that was applied (its answer was lost):
# nothing is counted twice, the totals are only read. Returns {revision, each counter's
# total, then, when the revision differs from the caller's, the hash's member, value
# pairs}: so every replica learns of every key over budget at its next flush.
USAGE_FLUSH = r"""
local nb, nc, batch = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local again = false
if batch > 0 then
  again = tonumber(redis.call('GET', KEYS[3]) or '0') >= batch
  if not again then redis.call('SET', KEYS[3], ARGV[7], 'EX', ARGV[8]) end
end
local a = 9
for i = 1, nb do
  local mk, dk = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local nf = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, nf do
    if not again then
      redis.call('HINCRBY', mk, ARGV[a], ARGV[a + 1])
      redis.call('HINCRBY', dk, ARGV[a], ARGV[a + 1])
    end
    a = a + 2
  end
  if not again then
    redis.call('EXPIRE', mk, ARGV[1])
    redis.call('EXPIRE', dk, ARGV[2])
  end
end
local out = {''}
local changed = false
local base = 3 + 2 * nb
for i = 1, nc do
  local key = KEYS[base + i]
  local limit, ttl = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local total
  if again then
    total = tonumber(redis.call('GET', key) or '0')
  else
    total = redis.call('INCRBY', key, ARGV[a])
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    if limit > 0 and total >= limit then
      redis.call('HSET', KEYS[1], ARGV[a + 3], string.format('%d %s', total, ARGV[a + 4]))
      changed = true
    end
  end
  out[#out + 1] = total
  a = a + 5
end
if changed then
  local now = tonumber(ARGV[4])
  local all = redis.call('HGETALL', KEYS[1])
  for j = 1, #all, 2 do
    local ends = tonumber(string.match(all[j + 1], ' (%d+)$') or '0')
    if ends > 0 and ends <= now then redis.call('HDEL', KEYS[1], all[j]) end
  end
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], t[1] .. '.' .. t[2])
end
local rev = redis.call('GET', KEYS[2]) or ''
out[1] = rev
if rev ~= ARGV[3] then
  local all = redis.call('HGETALL', KEYS[1])
  for j = 1, #all do out[#out + 1] = all[j] end
end
return out
"""
