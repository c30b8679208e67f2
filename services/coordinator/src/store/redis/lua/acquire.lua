-- Acquire: ARGV 2 skey, 3 pod, 4 conn, 5 mode ('takeover' | 'if_vacant'), 6 retention ms,
-- 7 tombstone ms, 8.. routes to register. KEYS[1] = the session key (cluster routing),
-- KEYS[2] = the key's tombstones. The session has no TTL: it lives with its pod's
-- registration (holder_live).
-- Returns {'unknown_pod'} | {'refused', pod, conn, fence}
--       | {'ended', reason, current pod, conn, fence} (a tombstoned connection, any mode)
--       | {'granted', fence, prev pod, prev conn, prev fence, chat} ('' when none).
local skey, pod, conn, mode = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retention_ms, tomb_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local tombs = KEYS[2]
local now = now_ms()
if not pod_live(pod, now) then return { 'unknown_pod' } end
local sk = k_session(skey)
-- A session whose holder's pod lapsed or registered again is vacant: nobody is killed.
local cur = held_record(skey, now, retention_ms, { 'pod', 'conn', 'fence', 'chat', 'gen' })
-- A connection that was taken over or killed never gets the session back (a retried acquire
-- or a restore after a pod purge would otherwise undo the kill).
local ended = tombstone(tombs, conn, now)
if ended then return { 'ended', ended, cur[1] or '', cur[2] or '', cur[3] or '' } end
local chat = cur[4] or ''
local fence
local prev = { '', '', '' }
if cur[1] == pod and cur[2] == conn then
  -- The same connection again (a retried call): same grant, nobody killed. PERSIST drops the
  -- TTL of a record written while sessions had leases of their own.
  fence = cur[3]
  redis.call('PERSIST', sk)
else
  if cur[1] then
    if mode == 'if_vacant' then return { 'refused', cur[1], cur[2] or '', cur[3] or '' } end
    prev = { cur[1], cur[2] or '', cur[3] or '' }
    redis.call('SREM', k_pod_sessions(cur[1]), skey)
    bury(tombs, prev[2], prev[3], 'taken_over', now, tomb_ms)
    publish_kill(prev[1], prev[2], prev[3], 'taken_over', skey, now,
      'taken over by another connection', tomb_ms)
  end
  if chat == '' then chat = redis.call('GET', k_sel(skey)) or '' end
  fence = fmt(redis.call('INCR', K_SEQ))
  -- The registration number ties the session to this life of the pod (holder_live).
  local gen = redis.call('HGET', k_pod(pod), 'gen') or ''
  redis.call('HSET', sk, 'pod', pod, 'gen', gen, 'conn', conn, 'fence', fence, 'since', fmt(now),
    'chat', chat)
  redis.call('PERSIST', sk)
  redis.call('SADD', k_pod_sessions(pod), skey)
  for _, ix in ipairs(index_keys(skey)) do redis.call('SADD', ix, skey) end
end
for i = 8, #ARGV do add_route(pod, ARGV[i]) end
if chat ~= '' then
  local route = chat_route(skey, chat)
  if route then add_route(pod, route) end
  keep_selection(skey, chat, retention_ms)
end
return { 'granted', fence, prev[1], prev[2], prev[3], chat }
