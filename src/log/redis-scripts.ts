// The shared log's server-side steps, each one Lua script so Redis runs it atomically: every key
// a script touches is passed in KEYS and shares one hash tag, so the whole log lives in one slot
// of a Redis Cluster too. Errors start with a code word the caller matches on.

/** Entries others appended that one append's reply carries at most (see APPEND). */
export const READ_BETWEEN = 1_000;

/**
 * Drops what is past the size or the age bound, by position (positions are dense, so the first
 * one young enough is found by bisection), never an entry after the checkpoint: a replica that
 * starts folds those onto it. Returns how many entries went, and which bound took them.
 */
const TRIM_FUNCTION = `
local function trim(meta, log, n, nowMs, keep, retentionMs)
  local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
  if not oldest then return 0, '' end
  local lo = tonumber(string.match(oldest[1], '^(%d+)'))
  local cut, reason = n - keep + 1, 'size'
  local function msAt(pos)
    local e = redis.call('XRANGE', log, pos .. '-0', pos .. '-0')[1]
    if not e then return nil end
    for j = 1, #e[2], 2 do if e[2][j] == 'm' then return tonumber(e[2][j + 1]) end end
    return nil
  end
  local horizon = nowMs - retentionMs
  local from = math.max(lo, cut)
  local t0 = msAt(from)
  if t0 and t0 < horizon then
    local a, b = from, n + 1
    while a < b do
      local mid = math.floor((a + b) / 2)
      local t = msAt(mid)
      if t and t < horizon then a = mid + 1 else b = mid end
    end
    cut, reason = a, 'age'
  end
  local statePos = tonumber(redis.call('HGET', meta, 'statePos') or '0')
  if cut > statePos + 1 then cut = statePos + 1 end
  if cut <= lo then return 0, '' end
  return redis.call('XTRIM', log, 'MINID', cut .. '-0'), reason
end
`;

/**
 * KEYS: meta, log. ARGV: max entries, retention ms. The age bound applied while nothing is
 * appended. Returns {trimmed, reason}.
 */
export const TRIM = `${TRIM_FUNCTION}
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local now = redis.call('TIME')
local trimmed, reason = trim(KEYS[1], KEYS[2], n, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), tonumber(ARGV[1]), tonumber(ARGV[2]))
return {trimmed, reason}
`;

/**
 * KEYS: meta, log, state. ARGV: a new epoch, the checkpoint to start the new log with.
 * Creates the log when there is none (first start, or a Redis that lost its data); returns the
 * epoch and head either way. A stream without its meta is a remnant and is dropped.
 */
export const INIT = `
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch then
  return {epoch, redis.call('HGET', KEYS[1], 'n') or '0'}
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'n', '0', 'statePos', '0', 'created', redis.call('TIME')[1])
redis.call('SET', KEYS[3], ARGV[2])
return {ARGV[1], '0'}
`;

/**
 * KEYS: meta, log, lease, writer, keys, keyq.
 * ARGV: epoch, lease token ('' = not fenced), batch number of this writer, max entries,
 *       retention ms, ingest keys (space-separated, '' = none), entry count, the position the
 *       writer has read up to ('' = none), then 6 fields per entry: event name ('' = state only),
 *       device, type bit, data JSON, device ts, fold JSON.
 * Appends the entries at positions n+1…, in one step. Fenced: with a token, only the holder of
 * the ingest lease may append. Idempotent: a batch number this writer already appended (a retry
 * whose first reply was lost) appends nothing. The ingest keys (one per MQTT message) are remembered (the last 4,096),
 * so a message the broker redelivers after a failover is known.
 * Returns {first, last, trimmed, reason, ms, between}: `ms` the time stamped on the entries and
 * `between` the entries others appended after the writer's read position and before `first`
 * (at most READ_BETWEEN), or false when there were more: with them, the writer has everything
 * up to `last` without reading the log (see RedisLog.appendGroup).
 */
export const APPEND = `${TRIM_FUNCTION}
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'n')
local epoch = meta[1]
if not epoch then return redis.error_reply('NOLOG the log does not exist') end
if epoch ~= ARGV[1] then return redis.error_reply('EPOCH ' .. epoch) end
if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return redis.error_reply('FENCED this replica does not hold the ingest lease')
end
local n = tonumber(meta[2])
if not n then return redis.error_reply('NOLOG the log has no head') end
local batch = tonumber(ARGV[3])
local done = tonumber(redis.call('SET', KEYS[4], ARGV[3], 'PX', 3600000, 'GET') or '0')
if batch <= done then
  if batch < done then redis.call('SET', KEYS[4], tostring(done), 'PX', 3600000) end
  return {0, 0, 0, 'retry'}
end
local first = n + 1
local now = redis.call('TIME')
local ms = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local count = tonumber(ARGV[7])
local names = {'e', 'd', 'b', 'j', 't', 'f'}
local log = KEYS[2]
for i = 0, count - 1 do
  local at = 9 + i * 6
  n = n + 1
  local e, d, b, j, t, f = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  if e ~= '' and d ~= '' and b ~= '' and j ~= '' and t ~= '' and f ~= '' then
    -- The common entry (an event of a device, with its fold): every field, no table to build.
    redis.call('XADD', log, n .. '-0', 'm', ms, 'e', e, 'd', d, 'b', b, 'j', j, 't', t, 'f', f)
  else
    local fields = {'m', ms}
    for k = 1, 6 do
      local v = ARGV[at + k - 1]
      if v ~= '' then
        fields[#fields + 1] = names[k]
        fields[#fields + 1] = v
      end
    end
    redis.call('XADD', log, n .. '-0', unpack(fields))
  end
end
redis.call('HSET', KEYS[1], 'n', n)
for key in string.gmatch(ARGV[6], '%S+') do
  if redis.call('HSETNX', KEYS[5], key, n) == 1 then
    redis.call('LPUSH', KEYS[6], key)
    if redis.call('LLEN', KEYS[6]) > 4096 then
      redis.call('HDEL', KEYS[5], redis.call('RPOP', KEYS[6]))
    end
  end
end
local trimmed, reason = 0, ''
if math.floor(n / 64) ~= math.floor((first - 1) / 64) then
  trimmed, reason = trim(KEYS[1], KEYS[2], n, tonumber(ms), tonumber(ARGV[4]), tonumber(ARGV[5]))
end
local between = false
local known = tonumber(ARGV[8])
if known and known < first and first - 1 - known <= ${READ_BETWEEN} then
  between = {}
  if known < first - 1 then between = redis.call('XRANGE', KEYS[2], (known + 1) .. '-0', (first - 1) .. '-0') end
end
return {first, n, trimmed, reason, ms, between}
`;

/**
 * KEYS: meta, state. ARGV: epoch, position, checkpoint JSON. Keeps the newest checkpoint of this
 * epoch only. Returns 1 when stored.
 */
export const CHECKPOINT = `
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch ~= ARGV[1] then return redis.error_reply('EPOCH ' .. tostring(epoch)) end
local pos = tonumber(ARGV[2])
if pos <= tonumber(redis.call('HGET', KEYS[1], 'statePos') or '0') then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'statePos', pos)
return 1
`;

/** KEYS: lease. ARGV: token, ms. Takes the lease when free or extends it when held; 1 when held after. */
export const LEASE = `
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`;

/** KEYS: lease. ARGV: token. Gives the lease up, if held. */
export const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;
