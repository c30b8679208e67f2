-- Heartbeat, the deployment step (steps.rs), before the pod step: KEYS 1 the pod index.
-- ARGV 1 pod, 2 pod lease ms. Schedules the reaper's look at the pod for when its lease would
-- lapse, so a pod the pod step registers is always in the index.
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
return { 'ok' }
