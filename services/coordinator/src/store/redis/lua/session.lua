-- Reads a session: KEYS 1 session. Returns {} when nobody holds it, else pod, gen, conn, fence,
-- since, lease end ('': a session lives as long as its holder's registration, whose lease the
-- caller reads with its check that it lives), chat.
local sk = KEYS[1]
local cur = redis.call('HMGET', sk, 'pod', 'gen', 'conn', 'fence', 'since', 'chat')
if not cur[1] then return {} end
return { cur[1], cur[2] or '', cur[3] or '', cur[4] or '', cur[5] or '', '', cur[6] or '' }
