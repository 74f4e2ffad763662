-- crypto: RFC 4231's HMAC vectors, digests, hex and base64, equal, random, misuse, and
-- Standard Webhooks signatures (the specification's example; verify on the virtual clock).

local function rep(byte, n) return string.char(byte):rep(n) end

-- RFC 4231 section 4: HMAC-SHA-256/384/512 test cases 1 to 7
local LONG_KEY = rep(0xaa, 131)
local RFC4231 = {
  { key = rep(0x0b, 20), data = "Hi There",
    sha256 = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    sha384 = "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
          .. "faea9ea9076ede7f4af152e8b2fa9cb6",
    sha512 = "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
          .. "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854" },
  { key = "Jefe", data = "what do ya want for nothing?",
    sha256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    sha384 = "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
          .. "8e2240ca5e69e2c78b3239ecfab21649",
    sha512 = "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
          .. "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737" },
  { key = rep(0xaa, 20), data = rep(0xdd, 50),
    sha256 = "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    sha384 = "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b"
          .. "2a5ab39dc13814b94e3ab6e101a34f27",
    sha512 = "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
          .. "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb" },
  { key = crypto.unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"), data = rep(0xcd, 50),
    sha256 = "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    sha384 = "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e"
          .. "6801dd23c4a7d679ccf8a386c674cffb",
    sha512 = "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
          .. "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd" },
  { key = rep(0x0c, 20), data = "Test With Truncation", truncated = true,
    sha256 = "a3b6167473100ee06e0c796c2955552b",
    sha384 = "3abf34c3503b2a23a46efc619baef897",
    sha512 = "415fad6271580a531d4179bc891d87a6" },
  { key = LONG_KEY, data = "Test Using Larger Than Block-Size Key - Hash Key First",
    sha256 = "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    sha384 = "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6"
          .. "0c2ef6ab4030fe8296248df163f44952",
    sha512 = "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
          .. "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598" },
  { key = LONG_KEY, data = "This is a test using a larger than block-size key and a larger "
          .. "than block-size data. The key needs to be hashed before being used by the HMAC "
          .. "algorithm.",
    sha256 = "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    sha384 = "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5"
          .. "a678cc31e799176d3860e6110c46523e",
    sha512 = "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
          .. "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58" },
}

test("HMAC-SHA-256/384/512 give RFC 4231's test cases 1 to 7", function()
  for i, tc in ipairs(RFC4231) do
    for _, alg in ipairs({ "sha256", "sha384", "sha512" }) do
      local got = crypto.hmac(alg, tc.key, tc.data)
      if tc.truncated then got = got:sub(1, 32) end -- test case 5: the first 128 bits
      eq(got, tc[alg], ("test case %d, %s"):format(i, alg))
    end
  end
end)

test("hmac encodes as hex (the default), base64 or raw", function()
  local tc = RFC4231[2]
  local raw = crypto.hmac("sha256", tc.key, tc.data, "raw")
  eq(#raw, 32)
  eq(crypto.hex(raw), tc.sha256)
  eq(crypto.hmac("sha256", tc.key, tc.data, "hex"), tc.sha256)
  eq(crypto.hmac("sha256", tc.key, tc.data, "base64"), "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=")
  -- HMAC-SHA1 (RFC 2202 test case 2), and an empty key
  eq(crypto.hmac("sha1", "Jefe", "what do ya want for nothing?"),
     "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
  eq(crypto.hmac("sha256", "", ""), "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
end)

test("sha1, sha256, sha384, sha512 (FIPS 180 'abc')", function()
  eq(crypto.sha1("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d")
  eq(crypto.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  eq(crypto.sha384("abc"), "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
                        .. "8086072ba1e7cc2358baeca134c825a7")
  eq(crypto.sha512("abc"), "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                        .. "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
  eq(crypto.sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
  eq(crypto.sha256("abc", "base64"), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=")
  eq(crypto.sha256("abc", "raw"), crypto.unhex(crypto.sha256("abc")))
end)

test("hex and unhex round-trip every byte; bad hex is nil, msg", function()
  local all = {}
  for b = 0, 255 do all[#all + 1] = string.char(b) end
  all = table.concat(all)
  local h = crypto.hex(all)
  eq(#h, 512)
  eq(h:sub(1, 8), "00010203")
  eq(h:sub(-4), "feff")
  eq(crypto.unhex(h), all)
  eq(crypto.unhex(h:upper()), all)
  eq(crypto.hex(""), "")
  eq(crypto.unhex(""), "")
  eq({ crypto.unhex("abc") }, { nil, "unhex: odd length (3)" })
  eq({ crypto.unhex("0g") }, { nil, "unhex: not a hex digit at byte 2" })
  eq({ crypto.unhex("zz") }, { nil, "unhex: not a hex digit at byte 1" })
end)

test("base64 and unbase64: RFC 4648's vectors, the url variant, bad input", function()
  local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
                    fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
  for plain, enc in pairs(vectors) do
    eq(crypto.base64(plain), enc)
    eq(crypto.unbase64(enc), plain)
    eq(crypto.unbase64((enc:gsub("=", ""))), plain, "padding is optional")
    eq(crypto.base64(plain, "url"), (enc:gsub("=", "")))
    eq(crypto.unbase64((enc:gsub("=", "")), "url"), plain)
  end
  local bin = "\251\255\191"
  eq(crypto.base64(bin), "+/+/")
  eq(crypto.base64(bin, "url"), "-_-_")
  eq(crypto.unbase64("-_-_", "url"), bin)
  for n = 0, 40 do
    local s = crypto.random(n)
    eq(crypto.unbase64(crypto.base64(s)), s)
    eq(crypto.unbase64(crypto.base64(s, "url"), "url"), s)
  end
  eq({ crypto.unbase64("Zm9v!") }, { nil, "unbase64: invalid character at byte 5" })
  eq({ crypto.unbase64("-_-_") }, { nil, "unbase64: invalid character at byte 1" })
  eq({ crypto.unbase64("+/+/", "url") }, { nil, "unbase64: invalid character at byte 1" })
  eq({ crypto.unbase64("Zm9 v") }, { nil, "unbase64: invalid character at byte 4" })
  eq({ crypto.unbase64("Z") }, { nil, "unbase64: wrong length or padding" })
  eq({ crypto.unbase64("Zg=") }, { nil, "unbase64: invalid character at byte 3" })
  eq({ crypto.unbase64("Zm8==") }, { nil, "unbase64: invalid character at byte 4" })
  eq({ crypto.unbase64("Zm9v====") }, { nil, "unbase64: invalid character at byte 5" })
  eq({ crypto.unbase64("Zm9=") }, { crypto.unbase64("Zm9") }, "Zm9= is fo, as Zm9 is")
end)

test("equal compares in constant time, strings only", function()
  eq(crypto.equal("abc", "abc"), true)
  eq(crypto.equal("abc", "abd"), false)
  eq(crypto.equal("abc", "ab"), false)
  eq(crypto.equal("", ""), true)
  eq(crypto.equal("a\0b", "a\0c"), false)
  fails(function() crypto.equal("1", 1) end, "bad argument #2 to '[%w.]*equal' %(string expected, got number%)")
  fails(function() crypto.equal(nil, "") end, "bad argument #1 to '[%w.]*equal' %(string expected, got nil%)")
end)

test("random gives n fresh bytes", function()
  eq(crypto.random(0), "")
  eq(#crypto.random(32), 32)
  neq(crypto.random(16), crypto.random(16))
  fails(function() crypto.random(-1) end, "bad argument #1 to '[%w.]*random' %(from 0 to 65536 bytes%)")
  fails(function() crypto.random(65537) end, "from 0 to 65536 bytes")
  fails(function() crypto.random("x") end, "number expected, got string")
end)

test("misuse raises with the argument and what is wrong", function()
  fails(function() crypto.hmac("md5", "k", "d") end, "bad argument #1 to '[%w.]*hmac' %(invalid option 'md5'%)")
  fails(function() crypto.hmac("sha256", nil, "d") end, "bad argument #2 to '[%w.]*hmac' %(string expected, got nil%)")
  fails(function() crypto.hmac("sha256", "k", {}) end, "bad argument #3 to '[%w.]*hmac' %(string expected, got table%)")
  fails(function() crypto.hmac("sha256", "k", "d", "HEX") end, "bad argument #4 to '[%w.]*hmac' %(invalid option 'HEX'%)")
  fails(function() crypto.sha256() end, "bad argument #1 to '[%w.]*sha256' %(string expected, got no value%)")
  fails(function() crypto.sha256("x", "b64") end, "invalid option 'b64'")
  fails(function() crypto.base64("x", "mime") end, "invalid option 'mime'")
  fails(function() crypto.webhook_sign("whsec_%%%", "msg_1", 1, "{}") end,
        "bad argument #1 to '[%w.]*webhook_sign' %(a whsec_ secret must be followed by base64")
  fails(function() crypto.webhook_sign("whsec_", "msg_1", 1, "{}") end, "a whsec_ secret must be followed by base64")
  fails(function() crypto.webhook_sign("k", "msg_1", -1, "{}") end, "bad argument #3 .*not negative")
  fails(function() crypto.webhook_sign("k", "msg_1", 1.5, "{}") end, "bad argument #3 .*number has no integer representation")
  fails(function() crypto.webhook_verify("k", "headers", "{}") end, "bad argument #2 .*table expected, got string")
  fails(function() crypto.webhook_verify("k", {}, "{}", -1) end, "bad argument #4 .*not negative")
end)

-- The Standard Webhooks specification's example (spec/standard-webhooks.md, "Verifying")
local SPEC = {
  secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  id = "msg_p5jXN8AQM9LWM0D4loKWxJek",
  ts = 1614265330,
  body = '{"test": 2432232314}',
  sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}

test("webhook_sign gives the Standard Webhooks specification's example", function()
  eq(crypto.webhook_sign(SPEC.secret, SPEC.id, SPEC.ts, SPEC.body), SPEC.sig)
  eq(crypto.webhook_sign(SPEC.secret, SPEC.id, "1614265330", SPEC.body), SPEC.sig, "a timestamp as a string")
  -- the signature is base64(HMAC-SHA256(key, id.timestamp.body)) with the key decoded
  local key = crypto.unbase64(SPEC.secret:sub(7))
  eq(SPEC.sig, "v1," .. crypto.hmac("sha256", key, SPEC.id .. "." .. SPEC.ts .. "." .. SPEC.body, "base64"))
  -- a secret without whsec_ is the key's own bytes
  eq(crypto.webhook_sign("plain", "m", 1, "b"), "v1," .. crypto.hmac("sha256", "plain", "m.1.b", "base64"))
end)

test("webhook_headers: id, timestamp from the clock, signature", function()
  local h = crypto.webhook_headers(SPEC.secret, SPEC.body, SPEC.id, SPEC.ts)
  eq(h, { ["webhook-id"] = SPEC.id, ["webhook-timestamp"] = "1614265330", ["webhook-signature"] = SPEC.sig })
  local now = math.floor(clock.now())
  h = crypto.webhook_headers(SPEC.secret, SPEC.body)
  eq(h["webhook-timestamp"], tostring(now), "the virtual clock")
  match(h["webhook-id"], "^msg_%x+$")
  eq(#h["webhook-id"], 36)
  neq(crypto.webhook_headers(SPEC.secret, SPEC.body)["webhook-id"], h["webhook-id"])
  eq(h["webhook-signature"], crypto.webhook_sign(SPEC.secret, h["webhook-id"], now, SPEC.body))
  clock.advance(10)
  eq(crypto.webhook_headers(SPEC.secret, SPEC.body, "m")["webhook-timestamp"], tostring(now + 10))
end)

test("webhook_verify accepts a good signature and refuses a bad one or an old timestamp", function()
  local h = crypto.webhook_headers(SPEC.secret, SPEC.body, SPEC.id)
  eq(crypto.webhook_verify(SPEC.secret, h, SPEC.body), true)
  -- header names in any case; several signatures, one of them good
  local mixed = { ["Webhook-Id"] = h["webhook-id"], ["WEBHOOK-TIMESTAMP"] = h["webhook-timestamp"],
                  ["webhook-signature"] = "v1,bm9wZQ== v2,xyz " .. h["webhook-signature"] }
  eq(crypto.webhook_verify(SPEC.secret, mixed, SPEC.body), true)
  mixed["webhook-signature"] = "v1,bm9wZQ==, " .. h["webhook-signature"]
  eq(crypto.webhook_verify(SPEC.secret, mixed, SPEC.body), true, "headers joined by ', '")

  local function refused(headers, body, tolerance, secret)
    return { crypto.webhook_verify(secret or SPEC.secret, headers, body or SPEC.body, tolerance) }
  end
  local function with(k, v)
    local c = {}
    for name, value in pairs(h) do c[name] = value end
    c[k] = v
    return c
  end
  local NO_MATCH = { nil, "webhook: no signature matches", "signature" }
  eq(refused(h, SPEC.body .. " "), NO_MATCH, "another body")
  eq(refused(h, nil, nil, "whsec_" .. crypto.base64("another key")), NO_MATCH, "another secret")
  eq(refused(with("webhook-id", "msg_other")), NO_MATCH, "another id")
  eq(refused(with("webhook-signature", h["webhook-signature"]:gsub("^v1", "v2"))), NO_MATCH)
  eq(refused(with("webhook-signature", "v1,!!!")), NO_MATCH)
  eq(refused(with("webhook-signature", "")), NO_MATCH)
  eq(refused(with("webhook-id", nil)), { nil, "webhook: no webhook-id header", "missing" })
  eq(refused(with("webhook-signature", nil)), { nil, "webhook: no webhook-signature header", "missing" })
  eq(refused(with("webhook-timestamp", "soon")),
     { nil, "webhook: webhook-timestamp is not a number: soon", "timestamp" })

  -- five minutes either way by default, or the tolerance given
  local now = math.floor(clock.now())
  local function at(ts) return crypto.webhook_headers(SPEC.secret, SPEC.body, SPEC.id, ts) end
  eq(crypto.webhook_verify(SPEC.secret, at(now - 300), SPEC.body), true)
  eq(refused(at(now - 301)), { nil, "webhook: timestamp " .. (now - 301) .. " is too old", "timestamp" })
  eq(refused(at(now + 301)), { nil, "webhook: timestamp " .. (now + 301) .. " is in the future", "timestamp" })
  eq(crypto.webhook_verify(SPEC.secret, at(now - 3000), SPEC.body, 3600), true)
  eq(refused(at(SPEC.ts))[3], "timestamp", "the spec's example is years old")
  eq(crypto.webhook_verify(SPEC.secret, at(SPEC.ts), SPEC.body, math.huge), true)
  -- a signature checked later on the virtual clock gets old
  clock.advance(301)
  eq(refused(h)[3], "timestamp")
end)

test("crypto is a global and require('crypto')", function()
  eq(require("crypto"), crypto)
end)
