-- Acquire, the session step (steps.rs): KEYS 1 session, 2 tombstones, 3 selection, 4 fencing
-- counter. ARGV 1 pod, 2 its live registration, 3 conn, 4 mode ('takeover' | 'if_vacant'),
-- 5 retention ms, 6 tombstone ms, 7 dead pod, 8 its dead registration ('' when the caller
-- found the holder alive or there was none), 9 the kill-command channel, 10 the session key.
-- The session has no TTL: it lives as long as the registration that holds it.
-- Returns {'refused', pod, conn, fence}
--       | {'ended', reason, current pod, conn, fence} (a tombstoned connection, any mode)
--       | {'granted', fence, prev pod, prev conn, prev fence, prev gen, chat, kill line}
--         ('' when none; the kill of the previous holder is published here).
local sk, tombs, selk, fk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local pod, gen, conn, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local retention_ms, tomb_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
-- A session whose holder's registration ended is vacant: nobody is killed.
local cur = held_record(sk, selk, now, retention_ms, pod, gen, ARGV[7], ARGV[8])
-- A connection that was taken over or killed never gets the session back (a retried acquire
-- or a restore after a pod purge would otherwise undo the kill).
local ended = tombstone(tombs, conn, now)
if ended then return { 'ended', ended, cur[1] or '', cur[3] or '', cur[4] or '' } end
local chat = cur[5] or ''
local fence
local prev = { '', '', '', '' }
local line = ''
if cur[1] == pod and cur[3] == conn then
  -- The same connection again (a retried call): same grant, nobody killed. PERSIST drops the
  -- TTL of a record written while sessions had leases of their own.
  fence = cur[4]
  redis.call('PERSIST', sk)
else
  if cur[1] then
    if mode == 'if_vacant' then return { 'refused', cur[1], cur[3] or '', cur[4] or '' } end
    prev = { cur[1], cur[3] or '', cur[4] or '', cur[2] or '' }
    bury(tombs, prev[2], prev[3], 'taken_over', now, tomb_ms)
    line = publish_kill(ARGV[9], prev[1], prev[2], prev[3], 'taken_over', ARGV[10], now,
      'taken over by another connection')
  end
  if chat == '' then chat = redis.call('GET', selk) or '' end
  -- Strictly increasing per key: above the key's last token, and at least this master's clock
  -- in microseconds (so the counter may expire, and a token whose write a failover lost is
  -- still exceeded by the next one unless the clocks differ by more than the time between).
  local last = tonumber(redis.call('GET', fk) or '0') or 0
  fence = fmt(math.max(last + 1, now * 1000))
  redis.call('SET', fk, fence, 'PX', FENCE_KEEP_MS)
  redis.call('HSET', sk, 'pod', pod, 'gen', gen, 'conn', conn, 'fence', fence, 'since', fmt(now),
    'chat', chat)
  redis.call('PERSIST', sk)
end
keep_selection(selk, chat, retention_ms)
return { 'granted', fence, prev[1], prev[2], prev[3], prev[4], chat, line }
