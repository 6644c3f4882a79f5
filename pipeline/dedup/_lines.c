/* Native line normalisation and hashing for CCNet-style line deduplication.
 *
 * Computes, for every line of a text (split on '\n' only, like str.split("\n")), the hash
 * that pipeline.dedup.text.line_hash(normalize_line(line)) gives in Python: the line case
 * folded (str.casefold), every Unicode decimal digit replaced by '0', every character that
 * is neither a word character (re's \w) nor whitespace (re's \s) turned into a space,
 * whitespace runs collapsed to one space and the ends stripped; then BLAKE2b with an 8-byte
 * digest of its UTF-8 bytes, read as a little-endian signed 64-bit integer.
 *
 * The Unicode knowledge is not compiled in: pipeline/dedup/native_lines.py builds, from the
 * running interpreter's own str.casefold and re classes, a table giving each code point's
 * output after folding and classification:
 *   map[cp] == SEP          the code point separates words (punctuation, whitespace,
 *                           unassigned, surrogates: anything not \w)
 *   map[cp] & EXPAND        casefold gives several code points: entry (map[cp] & ~EXPAND)
 *                           of the expansion table, three slots each (an output code
 *                           point, SEP, or NONE for an unused slot)
 *   otherwise               the one code point to emit ('0' for digits)
 * so the result equals Python's on every code point of that interpreter's Unicode version.
 *
 * API (module pipeline.dedup._lines):
 *   new(map: bytes, expansions: bytes) -> capsule     map: 0x110000 uint32, native order
 *   nonempty(capsule, text: str) -> bytes             int64 hash of every line that does not
 *                                                      normalise to nothing, in order
 *   every(capsule, text: str) -> (bytes, bytes)       int64 hash per line (0 where empty)
 *                                                      and one byte per line: 1 if non-empty
 *   column(capsule, offsets, data) -> bytes          nonempty() of every string of an Arrow
 *                                                      string column (int32 offsets, UTF-8
 *                                                      data), concatenated (the counting side)
 *   cut(capsule, offsets, data, frequent, space, cap) an Arrow string column (int32 offsets,
 *                                                      UTF-8 data) without the lines whose hash
 *                                                      is in frequent (sorted int64), and per
 *                                                      string: lines and characters cut,
 *                                                      characters and words (at most cap)
 *                                                      left (space: the str.isspace bitmap);
 *                                                      see cut() below
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_blake2b.h"
#include "_bytes.h"
#include "_utf8.h"

#define N_CODEPOINTS 0x110000
#define SEP 0xFFFFFFFFu
#define NONE 0xFFFFFFFEu
#define EXPAND 0x80000000u

typedef struct {
    uint32_t *map;
    uint32_t *exp;
    size_t n_exp; /* entries of three slots */
} Tables;

/* ---- BLAKE2b (RFC 7693): _blake2b.h, shared with _exact.c ------------------------------ */

/* hashlib.blake2b(data, digest_size=8).digest() read as little-endian int64 */
static int64_t blake2b_8(const unsigned char *data, size_t n) {
    uint8_t out[8];
    rb2_hash(data, n, out, 8);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | out[i];
    return (int64_t)v;
}

/* ---- the scanner -------------------------------------------------------------------------- */

typedef struct {
    Bytes line;    /* the current line, normalised, as UTF-8 */
    int pending;   /* a separator was seen since the last emitted character */
    Bytes hashes;  /* int64 per output line */
    Bytes flags;   /* uint8 per line (only when every line is reported) */
    int every;
} Scan;

static inline void put_utf8(Bytes *b, uint32_t cp) {
    unsigned char *p = b->p + b->len;
    if (cp < 0x80) {
        p[0] = (unsigned char)cp;
        b->len += 1;
    } else if (cp < 0x800) {
        p[0] = (unsigned char)(0xC0 | (cp >> 6));
        p[1] = (unsigned char)(0x80 | (cp & 0x3F));
        b->len += 2;
    } else if (cp < 0x10000) {
        p[0] = (unsigned char)(0xE0 | (cp >> 12));
        p[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        p[2] = (unsigned char)(0x80 | (cp & 0x3F));
        b->len += 3;
    } else {
        p[0] = (unsigned char)(0xF0 | (cp >> 18));
        p[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        p[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        p[3] = (unsigned char)(0x80 | (cp & 0x3F));
        b->len += 4;
    }
}

/* emit one table value that is an output code point or SEP (capacity already reserved) */
static inline void emit_one(Scan *s, uint32_t v) {
    if (v == SEP) {
        s->pending = 1;
        return;
    }
    if (s->pending) {
        if (s->line.len) s->line.p[s->line.len++] = ' ';
        s->pending = 0;
    }
    put_utf8(&s->line, v);
}

static int end_line(Scan *s) {
    int64_t h = 0;
    int nonempty = s->line.len > 0;
    if (nonempty) h = blake2b_8(s->line.p, s->line.len);
    if (nonempty || s->every) {
        if (bytes_reserve(&s->hashes, 8) < 0) return -1;
        memcpy(s->hashes.p + s->hashes.len, &h, 8);
        s->hashes.len += 8;
    }
    if (s->every) {
        if (bytes_reserve(&s->flags, 1) < 0) return -1;
        s->flags.p[s->flags.len++] = (unsigned char)nonempty;
    }
    s->line.len = 0;
    s->pending = 0;
    return 0;
}

/* 3 code points of 4 bytes and their separating spaces: the most one input character adds */
#define MAX_PER_CHAR 16

#define SCAN_LOOP(TYPE)                                                                    \
    do {                                                                                   \
        const TYPE *d = (const TYPE *)data;                                                \
        for (Py_ssize_t i = 0; i < n; i++) {                                               \
            uint32_t c = d[i];                                                             \
            if (c == '\n') {                                                               \
                if (end_line(s) < 0) return -1;                                            \
                continue;                                                                  \
            }                                                                              \
            uint32_t v = map[c];                                                           \
            if (v == SEP) {                                                                \
                s->pending = 1;                                                            \
                continue;                                                                  \
            }                                                                              \
            if (bytes_reserve(&s->line, MAX_PER_CHAR) < 0) return -1;                      \
            if (v & EXPAND) {                                                              \
                const uint32_t *e = exp + 3 * (size_t)(v & ~EXPAND);                       \
                for (int k = 0; k < 3 && e[k] != NONE; k++) emit_one(s, e[k]);             \
            } else {                                                                       \
                emit_one(s, v);                                                            \
            }                                                                              \
        }                                                                                  \
    } while (0)

static int scan_text(const Tables *t, Scan *s, int kind, const void *data, Py_ssize_t n) {
    const uint32_t *map = t->map, *exp = t->exp;
    if (kind == PyUnicode_1BYTE_KIND)
        SCAN_LOOP(Py_UCS1);
    else if (kind == PyUnicode_2BYTE_KIND)
        SCAN_LOOP(Py_UCS2);
    else
        SCAN_LOOP(Py_UCS4);
    return end_line(s); /* the text's last line (str.split gives one even for "") */
}

/* ---- Python interface --------------------------------------------------------------------- */

static void tables_free(PyObject *capsule) {
    Tables *t = (Tables *)PyCapsule_GetPointer(capsule, "refinery.LineTables");
    if (t == NULL) return;
    free(t->map);
    free(t->exp);
    free(t);
}

static PyObject *tables_new(PyObject *self, PyObject *args) {
    Py_buffer map, exp;
    if (!PyArg_ParseTuple(args, "y*y*", &map, &exp)) return NULL;
    Tables *t = NULL;
    if (map.len != (Py_ssize_t)(N_CODEPOINTS * sizeof(uint32_t)) ||
        exp.len % (Py_ssize_t)(3 * sizeof(uint32_t)) != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "need a map of 0x110000 uint32 and expansions of 3 uint32 each");
        goto fail;
    }
    t = calloc(1, sizeof(Tables));
    if (t == NULL) goto nomem;
    t->n_exp = (size_t)exp.len / (3 * sizeof(uint32_t));
    t->map = malloc((size_t)map.len);
    t->exp = malloc(exp.len ? (size_t)exp.len : 1);
    if (t->map == NULL || t->exp == NULL) goto nomem;
    memcpy(t->map, map.buf, (size_t)map.len);
    memcpy(t->exp, exp.buf, (size_t)exp.len);
    for (size_t cp = 0; cp < N_CODEPOINTS; cp++) { /* validate once, so scanning need not */
        uint32_t v = t->map[cp];
        if (v == SEP) continue;
        int bad = (v & EXPAND) ? (v & ~EXPAND) >= t->n_exp : v >= N_CODEPOINTS || v == '\n';
        if (bad) {
            PyErr_Format(PyExc_ValueError, "bad map entry %u for code point %zu", v, cp);
            goto fail;
        }
    }
    for (size_t i = 0; i < 3 * t->n_exp; i++) {
        uint32_t v = t->exp[i];
        if (v != SEP && v != NONE && (v >= N_CODEPOINTS || v == '\n')) {
            PyErr_Format(PyExc_ValueError, "bad expansion entry %u", v);
            goto fail;
        }
    }
    PyBuffer_Release(&map);
    PyBuffer_Release(&exp);
    PyObject *capsule = PyCapsule_New(t, "refinery.LineTables", tables_free);
    if (capsule == NULL) {
        free(t->map);
        free(t->exp);
        free(t);
    }
    return capsule;
nomem:
    PyErr_NoMemory();
fail:
    if (t != NULL) {
        free(t->map);
        free(t->exp);
        free(t);
    }
    PyBuffer_Release(&map);
    PyBuffer_Release(&exp);
    return NULL;
}

static PyObject *run(PyObject *args, int every) {
    PyObject *capsule, *text;
    if (!PyArg_ParseTuple(args, "OU", &capsule, &text)) return NULL;
    Tables *t = (Tables *)PyCapsule_GetPointer(capsule, "refinery.LineTables");
    if (t == NULL) return NULL;
    if (PyUnicode_READY(text) < 0) return NULL;
    Scan s = {{0}, 0, {0}, {0}, every};
    int rc;
    Py_BEGIN_ALLOW_THREADS /* the str is immutable and referenced by our caller */
    rc = scan_text(t, &s, PyUnicode_KIND(text), PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text));
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (rc < 0) {
        PyErr_NoMemory();
    } else if (!every) {
        result = PyBytes_FromStringAndSize((const char *)s.hashes.p, (Py_ssize_t)s.hashes.len);
    } else {
        result = Py_BuildValue("y#y#", (const char *)s.hashes.p, (Py_ssize_t)s.hashes.len,
                               (const char *)s.flags.p, (Py_ssize_t)s.flags.len);
    }
    free(s.line.p);
    free(s.hashes.p);
    free(s.flags.p);
    return result;
}

static PyObject *nonempty(PyObject *self, PyObject *args) { return run(args, 0); }

static PyObject *every(PyObject *self, PyObject *args) { return run(args, 1); }

/* ---- cutting frequent lines out of an Arrow string column (the apply side) ---------------- */

/* Decode the UTF-8 code point at p[*i] (p[0..n) valid UTF-8 from Arrow) and advance *i;
 * returns 0xFFFFFFFF on a malformed or truncated sequence. */
static inline uint32_t next_cp(const unsigned char *p, size_t n, size_t *i) {
    unsigned char b = p[*i];
    if (b < 0x80) {
        *i += 1;
        return b;
    }
    uint32_t c;
    int len = decode_utf8(p + *i, p + n, &c);
    if (len == 0) return 0xFFFFFFFFu;
    *i += (size_t)len;
    return c;
}

/* hash of the line p[0..n) as end_line would give it; *cps gets its code point count;
 * returns 1 non-empty, 0 empty, -1 out of memory, -2 malformed UTF-8 */
static int hash_utf8_line(const Tables *t, Scan *s, const unsigned char *p, size_t n,
                          int64_t *h, size_t *cps) {
    const uint32_t *map = t->map, *exp = t->exp;
    size_t i = 0, count = 0;
    s->line.len = 0;
    s->pending = 0;
    while (i < n) {
        uint32_t c = p[i] < 0x80 ? p[i++] : next_cp(p, n, &i);
        if (c == 0xFFFFFFFFu) return -2;
        count++;
        uint32_t v = map[c];
        if (v == SEP) {
            s->pending = 1;
            continue;
        }
        if (bytes_reserve(&s->line, MAX_PER_CHAR) < 0) return -1;
        if (v & EXPAND) {
            const uint32_t *e = exp + 3 * (size_t)(v & ~EXPAND);
            for (int k = 0; k < 3 && e[k] != NONE; k++) emit_one(s, e[k]);
        } else {
            emit_one(s, v);
        }
    }
    *cps = count;
    if (s->line.len == 0) return 0;
    *h = blake2b_8(s->line.p, s->line.len);
    return 1;
}

static int in_sorted(const int64_t *a, size_t n, int64_t x) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == x;
}

static inline int is_space(const unsigned char *space, uint32_t c) {
    return (space[c >> 3] >> (c & 7)) & 1;
}

/* code points of p[0..n) between the first and last non-space (len(str.strip())), and the
 * number of runs of non-space (len(str.split())) counted up to word_cap; space: bitmap over
 * code points (str.isspace). Only the ends are decoded: the middle's code points are its
 * bytes that are not UTF-8 continuation bytes. */
static int measure_utf8(const unsigned char *p, size_t n, const unsigned char *space,
                        int64_t word_cap, int64_t *stripped, int64_t *words) {
    size_t i = 0, first = n, end = 0;
    while (i < n) { /* the first non-space */
        size_t at = i;
        uint32_t c = p[i] < 0x80 ? p[i++] : next_cp(p, n, &i);
        if (c == 0xFFFFFFFFu) return -2;
        if (!is_space(space, c)) {
            first = at;
            break;
        }
    }
    *stripped = 0;
    *words = 0;
    if (first == n) return 0;
    size_t j = n;
    while (j > first) { /* the end of the last non-space */
        size_t k = j - 1;
        while (k > first && (p[k] & 0xC0) == 0x80) k--;
        size_t at = k;
        uint32_t c = p[at] < 0x80 ? p[at] : next_cp(p, n, &at);
        if (c == 0xFFFFFFFFu) return -2;
        if (!is_space(space, c)) {
            end = j;
            break;
        }
        j = k;
    }
    int64_t count = 0;
    for (size_t b = first; b < end; b++) count += (p[b] & 0xC0) != 0x80;
    *stripped = count;
    int64_t runs = 0;
    int in_word = 0;
    for (i = first; i < end && runs < word_cap;) {
        uint32_t c = p[i] < 0x80 ? p[i++] : next_cp(p, n, &i);
        if (c == 0xFFFFFFFFu) return -2;
        if (is_space(space, c)) {
            in_word = 0;
        } else if (!in_word) {
            runs++;
            in_word = 1;
        }
    }
    *words = runs;
    return 0;
}

/* cut(tables, offsets int32[n+1], data, frequent sorted int64, space bitmap, word_cap) ->
 *   (offsets int32[n+1], data, lines removed int32[n], chars removed int64[n],
 *    chars left after strip int64[n], words left int64[n], at most word_cap)
 * For every string: the lines (split on '\n') whose normalised hash is in frequent are cut,
 * the rest joined with '\n' and '\n' stripped from both ends (an uncut string is left as
 * is), as pipeline.dedup.lines.remove_lines does; a cut line counts its code points + 1. */
/* Arrow string offsets of n values over a data buffer of len bytes: in order and inside it.
 * Sets ValueError and returns 0 otherwise. */
static int offsets_ok(const int32_t *o, size_t n, Py_ssize_t len) {
    for (size_t r = 0; r < n; r++) {
        if (o[r] < 0 || o[r] > o[r + 1] || (Py_ssize_t)o[r + 1] > len) {
            PyErr_SetString(PyExc_ValueError, "offsets out of order or past the data");
            return 0;
        }
    }
    return 1;
}

static PyObject *cut(PyObject *self, PyObject *args) {
    PyObject *capsule;
    Py_buffer off, data, freq, space;
    long long word_cap;
    if (!PyArg_ParseTuple(args, "Oy*y*y*y*L", &capsule, &off, &data, &freq, &space, &word_cap))
        return NULL;
    PyObject *result = NULL;
    Scan s = {{0}, 0, {0}, {0}, 0};
    Bytes out = {0};
    int32_t *new_off = NULL, *removed = NULL;
    int64_t *chars = NULL, *left = NULL, *words = NULL;
    Tables *t = (Tables *)PyCapsule_GetPointer(capsule, "refinery.LineTables");
    if (t == NULL) goto done;
    if (off.len < 4 || off.len % 4 || freq.len % 8 || space.len != N_CODEPOINTS / 8) {
        PyErr_SetString(PyExc_ValueError, "need int32 offsets, int64 hashes and a 0x110000-bit "
                                          "space bitmap");
        goto done;
    }
    size_t n = (size_t)off.len / 4 - 1;
    const int32_t *o = (const int32_t *)off.buf;
    const unsigned char *d = (const unsigned char *)data.buf;
    if (!offsets_ok(o, n, data.len)) goto done;
    const int64_t *fq = (const int64_t *)freq.buf;
    size_t nf = (size_t)freq.len / 8;
    new_off = malloc((n + 1) * sizeof(int32_t));
    removed = calloc(n ? n : 1, sizeof(int32_t));
    chars = calloc(n ? n : 1, sizeof(int64_t));
    left = calloc(n ? n : 1, sizeof(int64_t));
    words = calloc(n ? n : 1, sizeof(int64_t));
    if (!new_off || !removed || !chars || !left || !words) {
        PyErr_NoMemory();
        goto done;
    }
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS /* the buffers are held until we return */
    new_off[0] = 0;
    for (size_t r = 0; r < n && rc == 0; r++) {
        const unsigned char *p = d + o[r];
        size_t len = (size_t)(o[r + 1] - o[r]), start = out.len, a = 0;
        if (bytes_reserve(&out, len + 1) < 0) { rc = -1; break; }
        for (;;) { /* each line p[a..b) */
            const unsigned char *nl = memchr(p + a, '\n', len - a);
            size_t b = nl ? (size_t)(nl - p) : len;
            int64_t h = 0;
            size_t cps = 0;
            int ne = hash_utf8_line(t, &s, p + a, b - a, &h, &cps);
            if (ne < 0) { rc = ne; break; }
            if (ne == 1 && nf && in_sorted(fq, nf, h)) {
                removed[r]++;
                chars[r] += (int64_t)cps + 1;
            } else {
                memcpy(out.p + out.len, p + a, b - a);
                out.len += b - a;
                out.p[out.len++] = '\n';
            }
            if (nl == NULL) break;
            a = b + 1;
        }
        if (rc) break;
        if (removed[r] == 0) { /* uncut: the string as it was */
            out.len = start;
            memcpy(out.p + start, p, len);
            out.len += len;
        } else { /* drop the join's last '\n', then strip '\n' at both ends */
            size_t lo = start, hi = out.len > start ? out.len - 1 : start;
            while (lo < hi && out.p[lo] == '\n') lo++;
            while (hi > lo && out.p[hi - 1] == '\n') hi--;
            memmove(out.p + start, out.p + lo, hi - lo);
            out.len = start + (hi - lo);
        }
        if (out.len > INT32_MAX) { rc = -3; break; }
        new_off[r + 1] = (int32_t)out.len;
        rc = measure_utf8(out.p + start, out.len - start, (const unsigned char *)space.buf,
                          (int64_t)word_cap, &left[r], &words[r]);
    }
    Py_END_ALLOW_THREADS
    if (rc == -1) {
        PyErr_NoMemory();
    } else if (rc == -2) {
        PyErr_SetString(PyExc_ValueError, "malformed UTF-8 in the text column");
    } else if (rc == -3) {
        PyErr_SetString(PyExc_OverflowError, "the cut text column exceeds 2 GiB");
    } else {
        result = Py_BuildValue("y#y#y#y#y#y#", (const char *)new_off, (Py_ssize_t)((n + 1) * 4),
                               out.p ? (const char *)out.p : "", (Py_ssize_t)out.len,
                               (const char *)removed, (Py_ssize_t)(n * 4),
                               (const char *)chars, (Py_ssize_t)(n * 8),
                               (const char *)left, (Py_ssize_t)(n * 8),
                               (const char *)words, (Py_ssize_t)(n * 8));
    }
done:
    free(s.line.p);
    free(out.p);
    free(new_off);
    free(removed);
    free(chars);
    free(left);
    free(words);
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    PyBuffer_Release(&freq);
    PyBuffer_Release(&space);
    return result;
}

/* column(tables, offsets int32[n+1], data) -> bytes: the int64 hash of every line (split on
 * '\n') of every string of an Arrow string column that normalises to something, in order:
 * what nonempty() gives for each string, concatenated (the counting phase's input). */
static PyObject *column(PyObject *self, PyObject *args) {
    PyObject *capsule;
    Py_buffer off, data;
    if (!PyArg_ParseTuple(args, "Oy*y*", &capsule, &off, &data)) return NULL;
    PyObject *result = NULL;
    Scan s = {{0}, 0, {0}, {0}, 0};
    Tables *t = (Tables *)PyCapsule_GetPointer(capsule, "refinery.LineTables");
    if (t == NULL) goto done;
    if (off.len < 4 || off.len % 4) {
        PyErr_SetString(PyExc_ValueError, "need int32 offsets");
        goto done;
    }
    size_t n = (size_t)off.len / 4 - 1;
    const int32_t *o = (const int32_t *)off.buf;
    const unsigned char *d = (const unsigned char *)data.buf;
    if (!offsets_ok(o, n, data.len)) goto done;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS /* the buffers are held until we return */
    for (size_t r = 0; r < n && rc == 0; r++) {
        const unsigned char *p = d + o[r];
        size_t len = (size_t)(o[r + 1] - o[r]), a = 0;
        for (;;) { /* each line p[a..b) */
            const unsigned char *nl = memchr(p + a, '\n', len - a);
            size_t b = nl ? (size_t)(nl - p) : len;
            int64_t h = 0;
            size_t cps = 0;
            int ne = hash_utf8_line(t, &s, p + a, b - a, &h, &cps);
            if (ne < 0) { rc = ne; break; }
            if (ne == 1) {
                if (bytes_reserve(&s.hashes, 8) < 0) { rc = -1; break; }
                memcpy(s.hashes.p + s.hashes.len, &h, 8);
                s.hashes.len += 8;
            }
            if (nl == NULL) break;
            a = b + 1;
        }
    }
    Py_END_ALLOW_THREADS
    if (rc == -1) PyErr_NoMemory();
    else if (rc == -2) PyErr_SetString(PyExc_ValueError, "malformed UTF-8 in the text column");
    else result = PyBytes_FromStringAndSize(s.hashes.p ? (const char *)s.hashes.p : "",
                                            (Py_ssize_t)s.hashes.len);
done:
    free(s.line.p);
    free(s.hashes.p);
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"new", tables_new, METH_VARARGS, "new(map, expansions) -> tables capsule"},
    {"nonempty", nonempty, METH_VARARGS,
     "nonempty(tables, text) -> bytes: int64 hash of each line that normalises to something"},
    {"every", every, METH_VARARGS,
     "every(tables, text) -> (bytes, bytes): int64 hash per line (0 if empty), 1 if non-empty"},
    {"column", column, METH_VARARGS,
     "column(tables, offsets, data) -> bytes: int64 hash of each non-empty line of each string"},
    {"cut", cut, METH_VARARGS,
     "cut(tables, offsets, data, frequent, space, word_cap) -> the strings without their "
     "frequent lines, and counts"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lines",
    "Native line normalisation and hashing (see pipeline.dedup.native_lines).", -1, methods,
};

PyMODINIT_FUNC PyInit__lines(void) { return PyModule_Create(&module); }
