-- SelectChat, the session step (steps.rs): KEYS 1 session, 2 selection. ARGV 1 pod, 2 its live
-- registration, 3 conn, 4 fence, 5 chat, 6 retention ms. Returns {'held'} | {'lost'}.
local sk, selk = KEYS[1], KEYS[2]
local pod, gen, conn, fence, chat = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retention_ms = tonumber(ARGV[6])
local now = now_ms()
local cur = held_record(sk, selk, now, retention_ms, pod, gen, '', '')
if cur[1] ~= pod or cur[3] ~= conn or cur[4] ~= fence then return { 'lost' } end
if cur[5] ~= chat then redis.call('HSET', sk, 'chat', chat) end
keep_selection(selk, chat, retention_ms)
return { 'held' }
