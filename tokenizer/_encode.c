/* Native byte-level BPE encoder for the GPT-2 pre-tokenization pattern.
 *
 * tokenizer/native.py builds it from a tokenizer's ranks (token bytes -> id) and a table of
 * each code point's class (letter, number, whitespace, other) taken from the `regex` module
 * that tokenizer.Tokenizer uses, so the splits equal Tokenizer's regex
 *     '(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * and the merges equal tiktoken's byte_pair_merge (lowest rank of an adjacent pair's
 * concatenation first, leftmost on ties; a pre-token that is itself a token is looked up
 * whole). The pre-tokenizer is a hand-written scanner, not a regex engine: that is where the
 * time goes in regex-based encoders. Pre-tokens longer than LONG_PIECE bytes merge through a
 * heap (bpe_long), so a megabyte-long run of one character stays linear-logarithmic.
 *
 * API (module tokenizer._encode):
 *   new(tokens: list[bytes], ids: list[int], classes: bytes) -> capsule
 *   encode(capsule, text: str) -> bytes   (uint32 ids, native byte order)
 * encode() raises UnicodeEncodeError for text that has no UTF-8 form (lone surrogates).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { C_OTHER = 0, C_LETTER = 1, C_NUMBER = 2, C_SPACE = 3 };
#define NO_RANK UINT32_MAX
#define N_CODEPOINTS 0x110000

typedef struct {
    uint64_t hash;
    uint32_t off, len, id; /* id == NO_RANK: empty slot */
} Slot;

typedef struct {
    Slot *slots;
    size_t mask;
    unsigned char *arena;
    unsigned char classes[N_CODEPOINTS];
} Encoder;

static inline uint64_t hash_bytes(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static inline uint32_t lookup(const Encoder *e, const unsigned char *p, size_t n) {
    uint64_t h = hash_bytes(p, n);
    size_t i = (size_t)h & e->mask;
    for (;;) {
        const Slot *s = &e->slots[i];
        if (s->id == NO_RANK) return NO_RANK;
        if (s->hash == h && s->len == n && memcmp(e->arena + s->off, p, n) == 0) return s->id;
        i = (i + 1) & e->mask;
    }
}

static void encoder_free(PyObject *capsule) {
    Encoder *e = (Encoder *)PyCapsule_GetPointer(capsule, "refinery.Encoder");
    if (e == NULL) return;
    free(e->slots);
    free(e->arena);
    free(e);
}

static PyObject *encoder_new(PyObject *self, PyObject *args) {
    PyObject *tokens, *ids;
    Py_buffer classes;
    if (!PyArg_ParseTuple(args, "O!O!y*", &PyList_Type, &tokens, &PyList_Type, &ids, &classes))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(tokens);
    if (PyList_GET_SIZE(ids) != n || classes.len != N_CODEPOINTS) {
        PyBuffer_Release(&classes);
        PyErr_SetString(PyExc_ValueError, "need as many ids as tokens and 0x110000 classes");
        return NULL;
    }
    Encoder *e = calloc(1, sizeof(Encoder));
    if (e == NULL) {
        PyBuffer_Release(&classes);
        return PyErr_NoMemory();
    }
    size_t cap = 16;
    while (cap < (size_t)n * 2 + 16) cap <<= 1;
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(tokens, i);
        if (!PyBytes_Check(t)) {
            PyBuffer_Release(&classes);
            free(e);
            PyErr_SetString(PyExc_TypeError, "tokens must be bytes");
            return NULL;
        }
        total += (size_t)PyBytes_GET_SIZE(t);
    }
    e->slots = malloc(cap * sizeof(Slot));
    e->arena = malloc(total ? total : 1);
    if (e->slots == NULL || e->arena == NULL) {
        PyBuffer_Release(&classes);
        free(e->slots);
        free(e->arena);
        free(e);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < cap; i++) e->slots[i].id = NO_RANK;
    e->mask = cap - 1;
    memcpy(e->classes, classes.buf, N_CODEPOINTS);
    PyBuffer_Release(&classes);
    size_t off = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(tokens, i);
        unsigned long id = PyLong_AsUnsignedLong(PyList_GET_ITEM(ids, i));
        if (PyErr_Occurred() || id >= NO_RANK) {
            free(e->slots);
            free(e->arena);
            free(e);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "token id out of range");
            return NULL;
        }
        size_t len = (size_t)PyBytes_GET_SIZE(t);
        memcpy(e->arena + off, PyBytes_AS_STRING(t), len);
        uint64_t h = hash_bytes(e->arena + off, len);
        size_t j = (size_t)h & e->mask;
        while (e->slots[j].id != NO_RANK) j = (j + 1) & e->mask;
        e->slots[j] = (Slot){h, (uint32_t)off, (uint32_t)len, (uint32_t)id};
        off += len;
    }
    return PyCapsule_New(e, "refinery.Encoder", encoder_free);
}

/* ---- output buffer ---------------------------------------------------------------------- */

typedef struct {
    uint32_t *ids;
    size_t len, cap;
} Out;

static int out_push(Out *o, uint32_t id) {
    if (o->len == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 1024;
        uint32_t *p = realloc(o->ids, cap * sizeof(uint32_t));
        if (p == NULL) return -1;
        o->ids = p;
        o->cap = cap;
    }
    o->ids[o->len++] = id;
    return 0;
}

/* ---- BPE of one pre-token that is not itself a token ------------------------------------ */

typedef struct {
    size_t start;
    uint32_t rank;
} Part;

/* Runs without the GIL: returns 0, -1 (out of memory) or -2 (a byte has no token). */
static int bpe(const Encoder *e, const unsigned char *p, size_t n, Out *o, Part *parts) {
    /* parts[i].rank: rank of p[parts[i].start : parts[i + 2].start] (tiktoken's layout) */
    size_t m = 0;
    uint32_t min_rank = NO_RANK;
    size_t min_i = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t r = lookup(e, p + i, 2);
        if (r < min_rank) {
            min_rank = r;
            min_i = i;
        }
        parts[m++] = (Part){i, r};
    }
    parts[m++] = (Part){n - 1, NO_RANK};
    parts[m++] = (Part){n, NO_RANK};
    while (min_rank != NO_RANK) {
        size_t i = min_i;
        if (i > 0) {
            parts[i - 1].rank = (i - 1 + 3 < m)
                ? lookup(e, p + parts[i - 1].start, parts[i + 2].start - parts[i - 1].start)
                : NO_RANK;
        }
        parts[i].rank = (i + 3 < m) ? lookup(e, p + parts[i].start, parts[i + 3].start - parts[i].start)
                                    : NO_RANK;
        memmove(&parts[i + 1], &parts[i + 2], (m - i - 2) * sizeof(Part));
        m--;
        min_rank = NO_RANK;
        for (size_t k = 0; k + 1 < m; k++) {
            if (parts[k].rank < min_rank) {
                min_rank = parts[k].rank;
                min_i = k;
            }
        }
    }
    for (size_t k = 0; k + 1 < m; k++) {
        uint32_t id = lookup(e, p + parts[k].start, parts[k + 1].start - parts[k].start);
        if (id == NO_RANK) return -2; /* a byte without a token: not a byte-level vocabulary */
        if (out_push(o, id) < 0) return -1;
    }
    return 0;
}

/* ---- BPE of a long pre-token: a heap over a linked list, O(n log n) ----------------------
 * The same merges as bpe(): the pair with the lowest rank first, the leftmost on ties (heap
 * key (rank, start); a node keeps its start when it absorbs the next one). Entries made stale
 * by a merge are recognised by the node's version and skipped. */

#define NONE SIZE_MAX
#define LONG_PIECE 128

typedef struct {
    uint32_t rank;
    uint32_t ver;
    size_t start, node;
} HeapItem;

static inline int item_less(const HeapItem *a, const HeapItem *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->start < b->start);
}

static void heap_push(HeapItem *h, size_t *len, HeapItem it) {
    size_t i = (*len)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!item_less(&it, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = it;
}

static HeapItem heap_pop(HeapItem *h, size_t *len) {
    HeapItem top = h[0], last = h[--(*len)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *len) break;
        if (c + 1 < *len && item_less(&h[c + 1], &h[c])) c++;
        if (!item_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*len) h[i] = last;
    return top;
}

/* Rank of node i joined with the node after it (NO_RANK if it is the last). */
static inline uint32_t node_rank(const Encoder *e, const unsigned char *p, size_t n,
                                 const size_t *start, const size_t *next, size_t i) {
    size_t j = next[i];
    if (j == NONE) return NO_RANK;
    size_t end = next[j] == NONE ? n : start[next[j]];
    return lookup(e, p + start[i], end - start[i]);
}

/* Runs without the GIL: returns 0, -1 (out of memory) or -2 (a byte has no token). */
static int bpe_long(const Encoder *e, const unsigned char *p, size_t n, Out *o) {
    size_t *start = malloc(n * sizeof(size_t)), *next = malloc(n * sizeof(size_t));
    size_t *prev = malloc(n * sizeof(size_t));
    uint32_t *ver = calloc(n, sizeof(uint32_t));
    unsigned char *dead = calloc(n, 1);
    HeapItem *heap = malloc((3 * n + 4) * sizeof(HeapItem));
    int rc = 0;
    if (!start || !next || !prev || !ver || !dead || !heap) {
        rc = -1;
        goto done;
    }
    size_t hlen = 0;
    for (size_t i = 0; i < n; i++) {
        start[i] = i;
        next[i] = i + 1 < n ? i + 1 : NONE;
        prev[i] = i > 0 ? i - 1 : NONE;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t r = node_rank(e, p, n, start, next, i);
        if (r != NO_RANK) heap_push(heap, &hlen, (HeapItem){r, 0, start[i], i});
    }
    while (hlen) {
        HeapItem it = heap_pop(heap, &hlen);
        size_t i = it.node;
        if (dead[i] || ver[i] != it.ver) continue;
        size_t j = next[i]; /* absorbed into i */
        dead[j] = 1;
        next[i] = next[j];
        if (next[j] != NONE) prev[next[j]] = i;
        ver[i]++;
        uint32_t r = node_rank(e, p, n, start, next, i);
        if (r != NO_RANK) heap_push(heap, &hlen, (HeapItem){r, ver[i], start[i], i});
        size_t q = prev[i];
        if (q != NONE) {
            ver[q]++;
            r = node_rank(e, p, n, start, next, q);
            if (r != NO_RANK) heap_push(heap, &hlen, (HeapItem){r, ver[q], start[q], q});
        }
    }
    for (size_t i = 0; i != NONE; i = next[i]) {
        size_t end = next[i] == NONE ? n : start[next[i]];
        uint32_t id = lookup(e, p + start[i], end - start[i]);
        if (id == NO_RANK) {
            rc = -2;
            break;
        }
        if (out_push(o, id) < 0) {
            rc = -1;
            break;
        }
    }
done:
    free(start);
    free(next);
    free(prev);
    free(ver);
    free(dead);
    free(heap);
    return rc;
}

/* ---- pre-tokenizer ---------------------------------------------------------------------- */

/* Class of the code point at s[i] (valid UTF-8); *next is the index after it. */
static inline int class_at(const Encoder *e, const unsigned char *s, size_t i, size_t *next) {
    unsigned char c = s[i];
    uint32_t cp;
    if (c < 0x80) {
        *next = i + 1;
        cp = c;
    } else if (c < 0xE0) {
        *next = i + 2;
        cp = ((uint32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
    } else if (c < 0xF0) {
        *next = i + 3;
        cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
    } else {
        *next = i + 4;
        cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3F) << 12) |
             ((uint32_t)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
    }
    return e->classes[cp];
}

/* End of the run of class `cls` starting at i. */
static inline size_t run_end(const Encoder *e, const unsigned char *s, size_t n, size_t i, int cls) {
    while (i < n) {
        size_t next;
        if (class_at(e, s, i, &next) != cls) break;
        i = next;
    }
    return i;
}

/* End of the pre-token starting at i (GPT-2 pattern, alternatives in order). */
static size_t pretoken_end(const Encoder *e, const unsigned char *s, size_t n, size_t i) {
    size_t next;
    if (s[i] == '\'' && i + 1 < n) {
        unsigned char a = s[i + 1];
        if (a == 's' || a == 'd' || a == 'm' || a == 't') return i + 2;
        if (i + 2 < n) {
            unsigned char b = s[i + 2];
            if ((a == 'l' && b == 'l') || (a == 'v' && b == 'e') || (a == 'r' && b == 'e')) return i + 3;
        }
    }
    int cls = class_at(e, s, i, &next);
    if (s[i] == ' ' && next < n) {
        size_t after;
        int c1 = class_at(e, s, next, &after);
        if (c1 != C_SPACE) return run_end(e, s, n, after, c1); /* ' ?' + letters/numbers/other */
    }
    if (cls != C_SPACE) return run_end(e, s, n, next, cls);
    /* \s+(?!\S) | \s+ : a whitespace run, less its last character when a non-space follows
       and the run is longer than one character */
    size_t last = i, j = next;
    while (j < n) {
        size_t k;
        if (class_at(e, s, j, &k) != C_SPACE) break;
        last = j;
        j = k;
    }
    if (j < n && last > i) return last;
    return j;
}

static PyObject *encode(PyObject *self, PyObject *args) {
    PyObject *capsule, *text;
    if (!PyArg_ParseTuple(args, "OU", &capsule, &text)) return NULL;
    Encoder *e = (Encoder *)PyCapsule_GetPointer(capsule, "refinery.Encoder");
    if (e == NULL) return NULL;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);
    if (utf8 == NULL) return NULL;
    const unsigned char *s = (const unsigned char *)utf8;
    Out o = {NULL, 0, 0};
    Part *parts = NULL;
    size_t parts_cap = 0;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    size_t i = 0;
    while (i < (size_t)n && !failed) {
        size_t end = pretoken_end(e, s, (size_t)n, i);
        size_t len = end - i;
        uint32_t id = lookup(e, s + i, len);
        if (id != NO_RANK) {
            if (out_push(&o, id) < 0) failed = 1;
        } else {
            if (len <= LONG_PIECE && len + 1 > parts_cap) {
                size_t cap = LONG_PIECE + 1;
                Part *p = realloc(parts, cap * sizeof(Part));
                if (p == NULL) {
                    failed = 1;
                    break;
                }
                parts = p;
                parts_cap = cap;
            }
            if (len == 1) { /* a single byte outside the vocabulary */
                failed = 2;
                break;
            }
            int rc = len > LONG_PIECE ? bpe_long(e, s + i, len, &o) : bpe(e, s + i, len, &o, parts);
            if (rc < 0) failed = rc == -1 ? 1 : 2;
        }
        i = end;
    }
    Py_END_ALLOW_THREADS
    free(parts);
    if (failed) {
        free(o.ids);
        if (failed == 1) return PyErr_NoMemory();
        PyErr_SetString(PyExc_ValueError, "a byte has no token: not a byte-level vocabulary");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize((const char *)o.ids, (Py_ssize_t)(o.len * sizeof(uint32_t)));
    free(o.ids);
    return result;
}

static PyMethodDef methods[] = {
    {"new", encoder_new, METH_VARARGS, "new(tokens, ids, classes) -> encoder capsule"},
    {"encode", encode, METH_VARARGS, "encode(encoder, text) -> bytes of uint32 ids"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_encode", "Native GPT-2-pattern BPE encoder (see tokenizer.native).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__encode(void) { return PyModule_Create(&module); }
