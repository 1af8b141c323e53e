// The cluster slot the tier groups its script calls by, against the values Redis documents for
// CLUSTER KEYSLOT and the CRC16 check value of its specification.
import { describe, expect, it } from "vitest"
import { keySlot } from "../src/internal/slot.js"

describe("keySlot", () => {
  it("gives the slots Redis documents for CLUSTER KEYSLOT", () => {
    expect(keySlot("somekey")).toBe(11058)
    expect(keySlot("foo{hash_tag}")).toBe(2515)
    expect(keySlot("bar{hash_tag}")).toBe(2515)
    // The cluster specification's CRC16 check value: crc16("123456789") = 0x31c3.
    expect(keySlot("123456789")).toBe(0x31c3 & 16383)
  })

  it("hashes only the first non-empty hash tag, or the whole key", () => {
    expect(keySlot("{user1000}.following")).toBe(keySlot("user1000"))
    expect(keySlot("foo{bar}{zap}")).toBe(keySlot("bar"))
    expect(keySlot("foo{{bar}}zap")).toBe(keySlot("{bar"))
    expect(keySlot("foo{}{bar}")).not.toBe(keySlot("bar"))
    expect(keySlot("no tag")).not.toBe(keySlot("no tah"))
  })

  it("hashes the key's UTF-8 bytes (values from CLUSTER KEYSLOT on redis-server 7.0)", () => {
    expect(keySlot("é")).toBe(10180)
    expect(keySlot("statesaver:{s:日本}")).toBe(14463)
    expect(keySlot("x{ü}")).toBe(9552)
  })
})
