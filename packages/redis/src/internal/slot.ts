// Redis Cluster's key slot: CRC16 (XMODEM) of the key's hash tag (or of the whole key when it has
// none), modulo 16384, over the key's UTF-8 bytes.

const TABLE = (() => {
  const t = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let c = i << 8
    for (let b = 0; b < 8; b++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff
    t[i] = c
  }
  return t
})()

const encoder = new TextEncoder()

/** CRC16-XMODEM of bytes `[from, to)`. */
function crc16(bytes: Uint8Array, from: number, to: number): number {
  let crc = 0
  for (let i = from; i < to; i++)
    crc = ((crc << 8) & 0xffff) ^ (TABLE[((crc >> 8) ^ (bytes[i] as number)) & 0xff] as number)
  return crc
}

/** The cluster slot of a key, by the rule Redis applies (`CLUSTER KEYSLOT`). */
export function keySlot(key: string): number {
  const bytes = encoder.encode(key)
  const open = bytes.indexOf(0x7b)
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1)
    // An empty tag (`{}`) does not count: the whole key is hashed.
    if (close > open + 1) return crc16(bytes, open + 1, close) & 16383
  }
  return crc16(bytes, 0, bytes.length) & 16383
}
