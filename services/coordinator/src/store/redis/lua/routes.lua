-- Register or unregister routes: ARGV 2 'add' | 'remove', 3 pod, 4.. routes.
-- KEYS[1] = the pod's route set. Adding requires a live pod. Returns {'ok'} | {'unknown_pod'}.
local op, pod = ARGV[2], ARGV[3]
if op == 'add' then
  if not pod_live(pod, now_ms()) then return { 'unknown_pod' } end
  for i = 4, #ARGV do add_route(pod, ARGV[i]) end
else
  for i = 4, #ARGV do
    redis.call('SREM', k_route(ARGV[i]), pod)
    redis.call('SREM', k_pod_routes(pod), ARGV[i])
  end
end
return { 'ok' }
