-- Shared prelude of every daisi coordinator script (prepended at build time).
--
-- Key layout (mirrors keys.rs). P = ARGV[1] is the hash tag "{prefix}", so every key below lives
-- in one Redis Cluster slot and a script never spans slots, even for keys it derives from data
-- it read (a previous holder's pod, a session's company).
--   P:seq             fencing-token sequence (one for all keys: strictly increasing per key)
--   P:s:<skey>        session hash: pod, gen (the pod registration that granted it), conn,
--                     fence, since (ms), chat; no TTL. Valid exactly while that registration
--                     is its pod's current one and within its lease (holder_live): the pod's
--                     heartbeat keeps all its sessions, and the session of a lapsed or
--                     re-registered pod is vacant at once
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
--   P:pod:<pod>       pod hash: inst, gen (registration number, from P:regseq), addr, reg,
--                     hb, exp (ms), us, as
--   P:pods            sorted set pod -> lease expiry (ms), for the reaper and listings
--   P:cmd             pub/sub channel of kill commands
--   P:ib:<pod>        the pod's inbox: sorted set sequence -> "<seq>\n<until ms>\n<kill line>" of the
--                     kill commands raised for it (newest INBOX_LIMIT, PEXPIRE = tombstone
--                     lifetime), read by its heartbeats (inbox.lua)
--   P:ibseq           sequence of inbox entries
--   P:swseq           sequence of sweep ids
--   P:regseq          sequence of pod registration numbers (a new one per instance, and per
--                     return after a lapse: a lapsed registration never lives again)
--   P:sw:<id>         a sweep of a purged pod registration: hash pod, gen
--   P:sw:<id>:s       the registration's session set (its P:ps:<pod>, renamed when claimed)
--   P:sw:<id>:r       the registration's route set (its P:pr:<pod>, renamed when claimed)
--   P:sweeps          sorted set sweep id -> lock expiry (ms): unfinished sweeps, so a reaper
--                     finishes the sweep of a replica that died midway
-- Session keys (skey) are "u:<c>:<a>:<u>" or "a:<admin>"; ids never contain ':', '{' or '}'.
local P = ARGV[1]
local K_SEQ = P .. ':seq'
local K_PODS = P .. ':pods'
local K_ADMIN_INDEX = P .. ':ix:adm'
local CHANNEL = P .. ':cmd'
local K_SWEEP_SEQ = P .. ':swseq'
local K_SWEEPS = P .. ':sweeps'
local K_REG_SEQ = P .. ':regseq'
local K_INBOX_SEQ = P .. ':ibseq'
local INBOX_LIMIT = 1000

local function k_session(skey) return P .. ':s:' .. skey end
local function k_sel(skey) return P .. ':sel:' .. skey end
local function k_pod_sessions(pod) return P .. ':ps:' .. pod end
local function k_pod_routes(pod) return P .. ':pr:' .. pod end
local function k_route(route) return P .. ':r:' .. route end
local function k_pod(pod) return P .. ':pod:' .. pod end
local function k_sweep(id) return P .. ':sw:' .. id end
local function k_inbox(pod) return P .. ':ib:' .. pod end

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

-- Whether the holder of a session record is alive: `gen`, the registration that granted the
-- session, is still its pod's current registration and within its lease. A record without
-- `gen` (granted before registrations were numbered) is judged by its pod alone. Answers are
-- cached for the script run (a renew asks once per pod, not once per session).
local holder_cache = {}
local function holder_live(pod, gen, now)
  local id = pod .. '\n' .. (gen or '')
  local known = holder_cache[id]
  if known ~= nil then return known end
  local r = redis.call('HMGET', k_pod(pod), 'gen', 'exp')
  local live = r[2] and tonumber(r[2]) >= now and ((not gen) or r[1] == gen) or false
  holder_cache[id] = live
  return live
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

-- The record of `skey` as HMGET of `fields` (the first must be 'pod', the last 'gen'), or all
-- false when nobody holds it. A record whose holder died (holder_live) is dropped here, as its
-- pod's sweep would, so the key is vacant at once.
local function held_record(skey, now, retention_ms, fields)
  local cur = redis.call('HMGET', k_session(skey), unpack(fields))
  if cur[1] and not holder_live(cur[1], cur[#fields], now) then
    local chat = redis.call('HGET', k_session(skey), 'chat')
    drop_session(skey, cur[1], chat, retention_ms)
    for i = 1, #fields do cur[i] = false end
  end
  return cur
end

-- Kill commands are published from inside the script, so a takeover and its kill are one
-- atomic step. Line format (ids contain no newline; the free-text message comes last):
-- v1, pod, connection, fencing, reason, session key, issued at (ms), message.
-- The same line goes to the pod's inbox for `keep_ms` (the tombstone lifetime), which the pod's
-- heartbeats read: a lost pub/sub message or stream is repaired at the next heartbeat.
local function publish_kill(pod, conn, fence, reason, skey, now, message, keep_ms)
  local line = table.concat({ 'v1', pod, conn, fence, reason, skey, fmt(now), message }, '\n')
  redis.call('PUBLISH', CHANNEL, line)
  local ib = k_inbox(pod)
  local seq = fmt(redis.call('INCR', K_INBOX_SEQ))
  redis.call('ZADD', ib, seq, seq .. '\n' .. fmt(now + keep_ms) .. '\n' .. line)
  redis.call('ZREMRANGEBYRANK', ib, 0, -(INBOX_LIMIT + 1))
  redis.call('PEXPIRE', ib, keep_ms)
end

-- Ends a pod's registration in O(1): its record goes, and its session and route sets are
-- renamed to a new sweep's, which sweep.lua empties in bounded chunks (a purge in one script
-- blocked Redis for ~4 ms per 1,000 sessions). Its sessions are vacant from now on
-- (holder_live); the sweep drops each only while it still carries the registration, and its routes
-- only when the pod's next registration has not registered them again, so a pod that
-- registers again at once keeps everything its new instance does. Returns the sweep id, or ''
-- when there is nothing to sweep. The sweep is locked (for `lock_ms`) by the caller.
local function claim_pod(pod, now, lock_ms)
  local gen = redis.call('HGET', k_pod(pod), 'gen') or ''
  redis.call('DEL', k_pod(pod))
  redis.call('ZREM', K_PODS, pod)
  local ps, pr = k_pod_sessions(pod), k_pod_routes(pod)
  local has_s, has_r = redis.call('EXISTS', ps) == 1, redis.call('EXISTS', pr) == 1
  if not has_s and not has_r then return '' end
  local id = fmt(redis.call('INCR', K_SWEEP_SEQ))
  local sw = k_sweep(id)
  redis.call('HSET', sw, 'pod', pod, 'gen', gen)
  if has_s then redis.call('RENAME', ps, sw .. ':s') end
  if has_r then redis.call('RENAME', pr, sw .. ':r') end
  redis.call('ZADD', K_SWEEPS, now + lock_ms, id)
  return id
end

-- A pod's record as 8 strings: pod, inst, addr, reg, hb, exp, us, as ('' when absent).
local function pod_record(pod)
  local r = redis.call('HMGET', k_pod(pod), 'inst', 'addr', 'reg', 'hb', 'exp', 'us', 'as')
  return { pod, r[1] or '', r[2] or '', r[3] or '', r[4] or '', r[5] or '', r[6] or '', r[7] or '' }
end

local function append(out, items)
  for _, v in ipairs(items) do out[#out + 1] = v end
end

-- A session's record as 7 strings: skey, pod, conn, fence, since, lease end (ms: its pod's),
-- chat; nil if nobody holds it (or its holder died: holder_live).
local function session_record(skey, now)
  local sk = k_session(skey)
  local cur = redis.call('HMGET', sk, 'pod', 'conn', 'fence', 'since', 'chat', 'gen')
  if not cur[1] or not holder_live(cur[1], cur[6], now) then return nil end
  local exp = redis.call('HGET', k_pod(cur[1]), 'exp') or fmt(now)
  return { skey, cur[1], cur[2] or '', cur[3] or '', cur[4] or '', exp, cur[5] or '' }
end

