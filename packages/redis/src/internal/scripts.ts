// The Lua scripts that own a stream's keys in Redis. Each runs atomically on the node that holds
// the stream's slot: KEYS[1] is the stream's hash (fields `data`, `steps`, `fence`), KEYS[2] its
// lease (`<token>:<owner>`, expiring after the lease time). Both keys share a hash tag.
import { createHash } from "node:crypto"

/**
 * ARGV: owner, leaseMs, start ("1"/"0"). Grants a new fencing token unless another owner holds
 * the lease. Without start, a stream with no stored state is unknown (nothing is created).
 * Replies {"OK", token, data|false, steps} | {"LEASED", holder, token, pttl} | {"UNKNOWN"}.
 */
const ACQUIRE = `
local cur = redis.call('GET', KEYS[2])
if cur then
  local tok, own = string.match(cur, '^(%d+):(.*)$')
  if own ~= ARGV[1] then
    return {'LEASED', own, tonumber(tok), redis.call('PTTL', KEYS[2])}
  end
end
if ARGV[3] ~= '1' and redis.call('HEXISTS', KEYS[1], 'data') == 0 then
  return {'UNKNOWN'}
end
local token = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('SET', KEYS[2], token .. ':' .. ARGV[1], 'PX', ARGV[2])
if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[1], 'data', 'steps')
  return {'OK', token, false, 0}
end
local v = redis.call('HMGET', KEYS[1], 'data', 'steps')
return {'OK', token, v[1], tonumber(v[2] or '0')}
`

/**
 * ARGV: owner, token, leaseMs, mode ("write" | "renew" | "release" | "forget"), data, steps,
 * release ("1"/"0"). Refused unless the token is the newest granted (a hash that vanished, as
 * after a restart without persistence, takes the writer's token). "write" stores data and steps;
 * "forget" drops them (keeping the fence). The lease is renewed, or deleted on release/forget.
 * Replies {"OK"} | {"FENCED", fence, holder|false}.
 */
const WRITE = `
local fence = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
local token = tonumber(ARGV[2])
if token < fence then
  local cur = redis.call('GET', KEYS[2])
  local holder = false
  if cur then holder = string.match(cur, '^%d+:(.*)$') end
  return {'FENCED', fence, holder}
end
if token > fence then redis.call('HSET', KEYS[1], 'fence', token) end
local mode = ARGV[4]
if mode == 'write' then
  redis.call('HSET', KEYS[1], 'data', ARGV[5], 'steps', ARGV[6])
elseif mode == 'forget' then
  redis.call('HDEL', KEYS[1], 'data', 'steps')
end
if mode == 'release' or mode == 'forget' or ARGV[7] == '1' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[2] .. ':' .. ARGV[1], 'PX', ARGV[3])
end
return {'OK'}
`

export interface Script {
  readonly source: string
  readonly sha: string
}

const script = (source: string): Script => ({
  source,
  sha: createHash("sha1").update(source).digest("hex"),
})

export const SCRIPTS = { acquire: script(ACQUIRE), write: script(WRITE) } as const

/** What the tier needs of a node-redis client or cluster (after `withTypeMapping`). */
export interface ScriptRunner {
  eval(
    script: string,
    options: { keys: string[]; arguments: (string | Buffer)[] },
  ): Promise<unknown>
  evalSha(
    sha1: string,
    options: { keys: string[]; arguments: (string | Buffer)[] },
  ): Promise<unknown>
}

/** EVALSHA, falling back to EVAL (which caches the script) on a node that does not have it yet. */
export async function runScript(
  client: ScriptRunner,
  s: Script,
  keys: string[],
  args: (string | Buffer)[],
): Promise<unknown> {
  try {
    return await client.evalSha(s.sha, { keys, arguments: args })
  } catch (e) {
    if (e instanceof Error && e.message.startsWith("NOSCRIPT")) {
      return client.eval(s.source, { keys, arguments: args })
    }
    throw e
  }
}
