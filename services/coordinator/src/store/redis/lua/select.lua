-- SelectChat: ARGV 2 skey, 3 pod, 4 conn, 5 fence, 6 chat, 7 retention ms.
-- KEYS[1] = the session key. Returns {'unknown_pod'} | {'held'} | {'lost'}.
local skey, pod, conn, fence, chat = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local retention_ms = tonumber(ARGV[7])
local now = now_ms()
if not pod_live(pod, now) then return { 'unknown_pod' } end
local route = chat_route(skey, chat)
if not route then return { 'lost' } end
local sk = k_session(skey)
local cur = held_record(skey, now, retention_ms, { 'pod', 'conn', 'fence', 'chat', 'gen' })
if cur[2] ~= conn or cur[3] ~= fence then return { 'lost' } end
-- The route is (re)asserted on every call, not only when the chat changes: a retry after a
-- timed-out select, or after the route was unregistered meanwhile, must never answer 'held'
-- without the route in place.
if cur[4] ~= chat then redis.call('HSET', sk, 'chat', chat) end
add_route(pod, route)
keep_selection(skey, chat, retention_ms)
return { 'held' }
