/* A growable byte buffer shared by the dedup extensions (_exact.c, _lines.c). */
#ifndef REFINERY_BYTES_H
#define REFINERY_BYTES_H

#include <stddef.h>
#include <stdlib.h>

typedef struct {
    unsigned char *p;
    size_t len, cap;
} Bytes;

/* Make room for `extra` more bytes after b->len (doubling); 0, or -1 when out of memory. */
static int bytes_reserve(Bytes *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

#endif
