/* Strict UTF-8 decoding shared by the dedup extensions (_exact.c, _lines.c): it accepts
 * exactly what Python's strict decoder accepts (no overlong forms, no surrogates, nothing
 * above U+10FFFF), so native and Python paths fail on the same input. */
#ifndef REFINERY_UTF8_H
#define REFINERY_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decode one non-ASCII UTF-8 sequence at p (< end) as Python's strict decoder accepts it;
 * store the code point and return the sequence length, or 0 if invalid. */
static inline int decode_utf8(const uint8_t *p, const uint8_t *end, uint32_t *cp) {
    uint32_t c = p[0];
    size_t left = (size_t)(end - p);
    if (c >= 0xC2 && c <= 0xDF) {
        if (left < 2 || (p[1] & 0xC0) != 0x80) return 0;
        *cp = ((c & 0x1F) << 6) | (p[1] & 0x3F);
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && p[1] >= 0xA0) return 0; /* surrogate */
        *cp = ((c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && p[1] >= 0x90) return 0; /* beyond U+10FFFF */
        *cp = ((c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
              ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
        return 4;
    }
    return 0;
}

#endif
