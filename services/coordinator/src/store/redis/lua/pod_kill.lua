-- Keeps a published kill command in its pod's inbox (steps.rs): KEYS 1 the inbox, 2 inbox
-- sequence, 3 the pod's session set. ARGV 1 the kill line (common.lua, publish_kill), 2 keep
-- ms, 3 the "<skey> <conn>" member the pod no longer holds ('' = none).
-- The pod's heartbeats read the inbox: a lost pub/sub message or stream is repaired at the
-- next heartbeat.
local ib, ibseq, ps = KEYS[1], KEYS[2], KEYS[3]
local keep_ms = tonumber(ARGV[2])
local now = now_ms()
local newest = redis.call('ZREVRANGE', ib, 0, 0, 'WITHSCORES')
local seq = next_seq(ibseq, newest[2], now)
redis.call('ZADD', ib, seq, seq .. '\n' .. fmt(now + keep_ms) .. '\n' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', ib, 0, -(INBOX_LIMIT + 1))
redis.call('PEXPIRE', ib, keep_ms)
if ARGV[3] ~= '' then redis.call('SREM', ps, ARGV[3]) end
return { 'ok' }
