/* BLAKE2b (RFC 7693), unkeyed, any digest length from 1 to 64 bytes: the same bytes as
 * Python's hashlib.blake2b(data, digest_size=n).digest(). Header-only (static functions),
 * written from the RFC's description (sections 2 and 3); messages are taken whole, so the
 * 128-bit byte counter's high word is always 0 (inputs are far below 2**64 bytes).
 */
#ifndef REFINERY_BLAKE2B_H
#define REFINERY_BLAKE2B_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* RFC 7693 section 2.6: the SHA-512 initialisation vector */
static const uint64_t RB2_IV[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL,
    0xA54FF53A5F1D36F1ULL, 0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL,
    0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL,
};

/* RFC 7693 section 2.7: message word schedule of rounds 0..9 (rounds 10, 11 reuse 0, 1) */
static const uint8_t RB2_SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint64_t rb2_ror(uint64_t x, unsigned n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t rb2_le64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* section 3.1: the mixing function G with rotations 32, 24, 16, 63 */
#define RB2_G(a, b, c, d, x, y)      \
    do {                             \
        a += b + (x);                \
        d = rb2_ror(d ^ a, 32);      \
        c += d;                      \
        b = rb2_ror(b ^ c, 24);      \
        a += b + (y);                \
        d = rb2_ror(d ^ a, 16);      \
        c += d;                      \
        b = rb2_ror(b ^ c, 63);      \
    } while (0)

#define RB2_ROUND(s)                                           \
    do {                                                       \
        RB2_G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);      \
        RB2_G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);      \
        RB2_G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);     \
        RB2_G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);     \
        RB2_G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);     \
        RB2_G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);   \
        RB2_G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);    \
        RB2_G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);    \
    } while (0)

/* section 3.2: compression F of one 128-byte block; t = bytes so far, last = final block */
static inline void rb2_compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++) m[i] = rb2_le64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = RB2_IV[i];
    }
    v[12] ^= t;
    if (last) v[14] = ~v[14];
    /* spelled out so every schedule index is a constant and m[] can stay in registers */
    RB2_ROUND(RB2_SIGMA[0]);
    RB2_ROUND(RB2_SIGMA[1]);
    RB2_ROUND(RB2_SIGMA[2]);
    RB2_ROUND(RB2_SIGMA[3]);
    RB2_ROUND(RB2_SIGMA[4]);
    RB2_ROUND(RB2_SIGMA[5]);
    RB2_ROUND(RB2_SIGMA[6]);
    RB2_ROUND(RB2_SIGMA[7]);
    RB2_ROUND(RB2_SIGMA[8]);
    RB2_ROUND(RB2_SIGMA[9]);
    RB2_ROUND(RB2_SIGMA[0]);
    RB2_ROUND(RB2_SIGMA[1]);
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* section 3.3: BLAKE2b of data[0:n] without a key, digest of outlen (1..64) bytes to out */
static void rb2_hash(const uint8_t *data, size_t n, uint8_t *out, size_t outlen) {
    uint64_t h[8];
    memcpy(h, RB2_IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ (uint64_t)outlen; /* depth 1, fanout 1, key length 0 */
    size_t done = 0;
    while (n - done > 128) {
        rb2_compress(h, data + done, (uint64_t)(done + 128), 0);
        done += 128;
    }
    uint8_t last[128] = {0}; /* the final block, zero-padded (one zero block when n == 0) */
    memcpy(last, data + done, n - done);
    rb2_compress(h, last, (uint64_t)n, 1);
    for (size_t i = 0; i < outlen; i++) out[i] = (uint8_t)(h[i / 8] >> (8 * (i % 8)));
}

#endif
