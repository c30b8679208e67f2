-- Shared prelude of every daisi coordinator script (prepended at build time).
--
-- Key layout (mirrors keys.rs). P = ARGV[1] is the hash tag "{prefix}", so every key below lives
-- in one Redis Cluster slot and a script never spans slots, even for keys it derives from data
-- it read (a previous holder's pod, a session's company).
--   P:seq             fencing-token sequence (one for all keys: strictly increasing per key)
--   P:s:<skey>        session hash: pod, conn, fence, since (ms), chat; PEXPIRE = session lease
--   P:sel:<skey>      selected chat kept after the session (TTL = selection retention)
--   P:t:<skey>        tombstones of the key: hash conn -> "<until ms>|<fence>|<reason>" for
--                     each connection taken over or killed within the tombstone lifetime
--                     (PEXPIRE = that lifetime, refreshed by every burial). Scripts receive it
--                     in KEYS, since its name is known before the script runs.
--   P:ps:<pod>        set of session keys the pod holds (purge, renew cleanup)
--   P:ix:c:<c>        set of user session keys of a company (admin listing)
--   P:ix:a:<c>:<a>    set of user session keys of an agent (admin listing)
--   P:ix:adm          set of admin session keys (admin listing)
--   P:r:<route>       set of pods registered for a route
--   P:pr:<pod>        set of routes of a pod
--   P:pod:<pod>       pod hash: inst, addr, reg, hb, exp (ms), us, as
--   P:pods            sorted set pod -> lease expiry (ms), for the reaper and listings
--   P:cmd             pub/sub channel of kill commands
-- Session keys (skey) are "u:<c>:<a>:<u>" or "a:<admin>"; ids never contain ':', '{' or '}'.
local P = ARGV[1]
local K_SEQ = P .. ':seq'
local K_PODS = P .. ':pods'
local K_ADMIN_INDEX = P .. ':ix:adm'
local CHANNEL = P .. ':cmd'

local function k_session(skey) return P .. ':s:' .. skey end
local function k_sel(skey) return P .. ':sel:' .. skey end
local function k_pod_sessions(pod) return P .. ':ps:' .. pod end
local function k_pod_routes(pod) return P .. ':pr:' .. pod end
local function k_route(route) return P .. ':r:' .. route end
local function k_pod(pod) return P .. ':pod:' .. pod end

-- Integers as plain decimal text (tostring would switch to exponent notation).
local function fmt(n) return string.format('%d', n) end

-- Redis' clock, so every replica agrees on lease expiry regardless of its own clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function index_keys(skey)
  local c, a = string.match(skey, '^u:([^:]+):([^:]+):[^:]+$')
  if c then return { P .. ':ix:c:' .. c, P .. ':ix:a:' .. c .. ':' .. a } end
  return { K_ADMIN_INDEX }
end

local function pod_live(pod, now)
  local exp = tonumber(redis.call('HGET', k_pod(pod), 'exp'))
  return exp ~= nil and exp >= now
end

local function chat_route(skey, chat)
  local c, a = string.match(skey, '^u:([^:]+):([^:]+):')
  if not c then return nil end
  return 'chat:' .. c .. ':' .. a .. ':' .. chat
end

local function add_route(pod, route)
  redis.call('SADD', k_route(route), pod)
  redis.call('SADD', k_pod_routes(pod), route)
end

local function keep_selection(skey, chat, retention_ms)
  if chat and chat ~= '' then
    redis.call('SET', k_sel(skey), chat, 'PX', retention_ms)
  end
end

-- The live tombstone of `conn` in the tombstone hash `tk`: its reason and fence, or nil.
local function tombstone(tk, conn, now)
  local v = redis.call('HGET', tk, conn)
  if not v then return nil end
  local until_ms, fence, reason = string.match(v, '^(%d+)|(%d+)|(.+)$')
  if not until_ms or tonumber(until_ms) < now then return nil end
  return reason, fence
end

-- Remembers for `ttl_ms` that `conn` lost the session (taken over or killed), so renew reports
-- the true reason and no acquire brings the connection back. The first reason wins while it
-- lives. Expired entries are dropped here: the hash holds only the burials of the last `ttl_ms`.
local function bury(tk, conn, fence, reason, now, ttl_ms)
  local all = redis.call('HGETALL', tk)
  for i = 1, #all, 2 do
    local until_ms = tonumber(string.match(all[i + 1], '^(%d+)|'))
    if not until_ms or until_ms < now then redis.call('HDEL', tk, all[i]) end
  end
  if not tombstone(tk, conn, now) then
    redis.call('HSET', tk, conn, fmt(now + ttl_ms) .. '|' .. fence .. '|' .. reason)
  end
  redis.call('PEXPIRE', tk, ttl_ms)
end

-- Deletes a session and its index entries; the caller has checked who holds it.
local function drop_session(skey, pod, chat, retention_ms)
  keep_selection(skey, chat, retention_ms)
  redis.call('DEL', k_session(skey))
  redis.call('SREM', k_pod_sessions(pod), skey)
  for _, ix in ipairs(index_keys(skey)) do redis.call('SREM', ix, skey) end
end

-- Kill commands are published from inside the script, so a takeover and its kill are one
-- atomic step. Line format (ids contain no newline; the free-text message comes last):
-- v1, pod, connection, fencing, reason, session key, issued at (ms), message.
local function publish_kill(pod, conn, fence, reason, skey, now, message)
  redis.call('PUBLISH', CHANNEL,
    table.concat({ 'v1', pod, conn, fence, reason, skey, fmt(now), message }, '\n'))
end

-- Removes a pod with every session it holds and every route it registered.
local function purge_pod(pod, retention_ms)
  local ns = 0
  for _, skey in ipairs(redis.call('SMEMBERS', k_pod_sessions(pod))) do
    local cur = redis.call('HMGET', k_session(skey), 'pod', 'chat')
    if cur[1] == pod then
      drop_session(skey, pod, cur[2], retention_ms)
      ns = ns + 1
    end
  end
  redis.call('DEL', k_pod_sessions(pod))
  local routes = redis.call('SMEMBERS', k_pod_routes(pod))
  for _, route in ipairs(routes) do redis.call('SREM', k_route(route), pod) end
  redis.call('DEL', k_pod_routes(pod))
  redis.call('DEL', k_pod(pod))
  redis.call('ZREM', K_PODS, pod)
  return ns, #routes
end

-- A pod's record as 8 strings: pod, inst, addr, reg, hb, exp, us, as ('' when absent).
local function pod_record(pod)
  local r = redis.call('HMGET', k_pod(pod), 'inst', 'addr', 'reg', 'hb', 'exp', 'us', 'as')
  return { pod, r[1] or '', r[2] or '', r[3] or '', r[4] or '', r[5] or '', r[6] or '', r[7] or '' }
end

local function append(out, items)
  for _, v in ipairs(items) do out[#out + 1] = v end
end

-- A session's record as 7 strings: skey, pod, conn, fence, since, lease end (ms), chat; nil if
-- nobody holds it.
local function session_record(skey, now)
  local sk = k_session(skey)
  local cur = redis.call('HMGET', sk, 'pod', 'conn', 'fence', 'since', 'chat')
  if not cur[1] then return nil end
  local ttl = redis.call('PTTL', sk)
  if ttl < 0 then ttl = 0 end
  return { skey, cur[1], cur[2] or '', cur[3] or '', cur[4] or '', fmt(now + ttl), cur[5] or '' }
end

