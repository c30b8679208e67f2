-- Reads a session: KEYS 1 session. Returns {} when nobody holds it, else pod, gen, conn, fence,
-- since, lease end (ms), chat. Whether its holder's registration lives is the caller's check.
local sk = KEYS[1]
local cur = redis.call('HMGET', sk, 'pod', 'gen', 'conn', 'fence', 'since', 'chat')
if not cur[1] then return {} end
local ttl = redis.call('PTTL', sk)
if ttl < 0 then ttl = 0 end
return { cur[1], cur[2] or '', cur[3] or '', cur[4] or '', cur[5] or '', fmt(now_ms() + ttl),
  cur[6] or '' }
