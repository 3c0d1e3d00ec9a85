// Helpers of the JavaScript client programs (clients.mjs).
import { createRequire } from 'node:module'
import zlib from 'node:zlib'

export const require = createRequire(import.meta.url)

export function emit (kind, fields = {}) {
  process.stdout.write(JSON.stringify({ kind, ...fields }, (_, v) => typeof v === 'bigint' ? Number(v) : v) + '\n')
}

export function fail (message) {
  emit('error', { message })
  process.exit(1)
}

// record i, as tests/go/main.go and tests/programs.py make it
export const key = (i) => Buffer.from(`key-${i}`)
export function value (i) {
  const tail = Buffer.alloc(64)
  for (let j = 0; j < 64; j++) tail[j] = (i + j * 5) % 256
  return Buffer.concat([Buffer.from(`record-${i} `.repeat(8)), tail])
}

export function record (topic, partition, offset, key, value, headers, member) {
  emit('record', { topic, partition, offset: Number(offset), key: key ? key.toString() : null,
    value: value ? value.toString('base64') : null, headers, member })
}

export function topicsSpec (a) {
  return Object.fromEntries(must(a, 'topics').split(',').map((s) => { const [n, p] = s.split(':'); return [n, Number(p)] }))
}

export function must (a, k) {
  if (!(k in a)) fail(`missing argument ${k}=`)
  return a[k]
}

export const num = (a, k, d) => (k in a ? Number(a[k]) : d)

// resolves on SIGTERM or SIGINT: a group member then commits and leaves
export const stopped = new Promise((resolve) => {
  process.once('SIGTERM', resolve)
  process.once('SIGINT', resolve)
})

// waits until `count` records were seen, then settle-ms more; fails at timeout-ms
export async function settle (a, seen) {
  const deadline = Date.now() + num(a, 'timeout-ms', 60000)
  while (seen() < num(a, 'count', 0)) {
    if (Date.now() > deadline) fail(`consumed ${seen()} of ${num(a, 'count', 0)} records before the timeout`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  await new Promise((resolve) => setTimeout(resolve, num(a, 'settle-ms', 300)))
}

export const zstd = { compress: (b) => zlib.zstdCompressSync(b), decompress: (b) => zlib.zstdDecompressSync(b) }

