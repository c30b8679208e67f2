-- Reaper, the last step (steps.rs): KEYS 1 the pod index. ARGV 1 pod, 2 the lock score
-- reap_due.lua set, 3 the next look ('' = the pod is gone and swept: remove it). Changes
-- nothing when a heartbeat rescheduled the pod since (its score is no longer the lock).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return { 'kept' } end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return { 'ok' }
