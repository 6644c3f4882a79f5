/* Native exact-dedup key over an Arrow string column, without a Python str per document.
 *
 * For each row of an Arrow ``string``/``large_string`` array (offsets + one UTF-8 buffer)
 * it computes what pipeline.dedup.text.document_key gives in Python: the text case folded
 * (str.casefold, full folding), split on Unicode whitespace and joined by single spaces
 * (" ".join(s.split())), then BLAKE2b with a 16-byte digest of the UTF-8 bytes. The Unicode
 * rules are the generated tables of _exact_tables.h (pipeline/dedup/exact_tables.py).
 *
 * A row that is not valid UTF-8 (a byte sequence Python's strict decoder refuses: bad lead
 * or continuation bytes, overlong forms, surrogates, beyond U+10FFFF, truncated) gets no key
 * here: its index is returned so the caller can let Python decide (decode or raise).
 *
 * API (module pipeline.dedup._exact):
 *   keys(offsets, data, wide, start, n, out) -> bytes
 *       offsets: the array's offsets buffer (int32, or int64 when wide), data: its UTF-8
 *       buffer; rows start .. start+n-1 (the array's offset and length); out: a writable
 *       buffer of 16*n bytes that receives each row's digest. Returns the int64 indexes
 *       (0-based within the n rows) of rows left to Python.
 *   normalize(offsets, data, wide, start, n) -> (bytes, bytes, bytes)
 *       the normalised UTF-8 of every row concatenated, n+1 int64 offsets into it, and the
 *       int64 indexes of rows left to Python (their normalised text is empty here).
 *   UNIDATA_VERSION: the Unicode version the tables were generated from.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_blake2b.h"
#include "_bytes.h"
#include "_utf8.h"
#include "_exact_tables.h"

#define DIGEST 16

static int bytes_put_i64(Bytes *b, int64_t v) {
    if (bytes_reserve(b, 8) < 0) return -1;
    memcpy(b->p + b->len, &v, 8);
    b->len += 8;
    return 0;
}

/* ---- normalisation ------------------------------------------------------------------------ */

static inline uint8_t *put_utf8(uint8_t *o, uint32_t cp) {
    if (cp < 0x80) {
        *o++ = (uint8_t)cp;
    } else if (cp < 0x800) {
        *o++ = (uint8_t)(0xC0 | (cp >> 6));
        *o++ = (uint8_t)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (uint8_t)(0xE0 | (cp >> 12));
        *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (uint8_t)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (uint8_t)(0xF0 | (cp >> 18));
        *o++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (uint8_t)(0x80 | (cp & 0x3F));
    }
    return o;
}


#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL

/* The common case of eight ASCII bytes w (little-endian) in running text: no control
 * characters and every space single (not after whitespace, not leading the text). Then the
 * output is w with A-Z lower-cased, a space first if whitespace was pending, and a trailing
 * space held back as pending. Returns 0 (nothing written) when w is not that case. */
static inline int ascii8(uint64_t w, uint8_t **o, const uint8_t *out, int *pending) {
    uint64_t control = ~(w + 0x60 * ONES) & HIGH;        /* bytes < 0x20 */
    uint64_t x = w ^ (0x20 * ONES);
    uint64_t space = ~(((x & ~HIGH) + ~HIGH) | x) & HIGH; /* bytes == 0x20, exactly */
    int first_space = (int)(space >> 7) & 1;
    if (control | (space & (space << 8)) | (uint64_t)(first_space & (*pending | (*o == out))))
        return 0;
    uint64_t upper = (w + (0x80 - 'A') * ONES) & ~(w + (0x80 - 'Z' - 1) * ONES) & HIGH;
    w |= upper >> 2; /* 0x80 >> 2 == 0x20: A-Z to a-z */
    uint8_t *dst = *o;
    if (*pending && dst != out) *dst++ = ' ';
    memcpy(dst, &w, 8);
    int last_space = (int)(space >> 63);
    *o = dst + 8 - last_space;
    *pending = last_space;
    return 1;
}

/* Write the normalised text of in[0:n] to out (room for n * EXACT_MAX_GROWTH bytes);
 * return its length, or -1 if in is not valid UTF-8. A space is written only between two
 * non-space characters, so runs collapse and the ends are stripped as str.split does. */
static ptrdiff_t normalize_row(const uint8_t *in, size_t n, uint8_t *out) {
    const uint8_t *p = in, *end = in + n;
    uint8_t *o = out;
    int pending = 0;
    while (p < end) {
        /* eight ASCII bytes at a time: see ascii8 */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (w & HIGH) break;
            if (ascii8(w, &o, out, &pending)) {
                p += 8;
                continue;
            }
            /* whitespace other than single spaces: branch-free per byte; a space is
             * written before a character when whitespace came before it and something
             * was written already */
            for (int k = 0; k < 8; k++) {
                uint8_t v = EXACT_ASCII[p[k]];
                int ws = v == EXACT_ASCII_WS;
                *o = ' ';
                o += pending & !ws & (o != out);
                *o = v;
                o += !ws;
                pending = ws;
            }
            p += 8;
        }
        if (p >= end) break;
        uint32_t c = *p;
        if (c < 0x80) {
            uint8_t v = EXACT_ASCII[c];
            p++;
            if (v == EXACT_ASCII_WS) {
                pending = 1;
                continue;
            }
            if (pending) {
                if (o != out) *o++ = ' ';
                pending = 0;
            }
            *o++ = v;
            continue;
        }
        uint32_t cp;
        int len = decode_utf8(p, end, &cp);
        if (len == 0) return -1;
        uint16_t block = EXACT_STAGE1[cp >> 8];
        int32_t v = block == EXACT_IDENTITY ? 0 : EXACT_STAGE2[block][cp & 0xFF];
        if (v == EXACT_WS) {
            p += len;
            pending = 1;
            continue;
        }
        if (pending) {
            if (o != out) *o++ = ' ';
            pending = 0;
        }
        if (v == 0) { /* folds to itself: copy the bytes */
            memcpy(o, p, (size_t)len);
            o += len;
        } else if (v < EXACT_EXPAND + 0x100000) { /* several code points (never whitespace) */
            const uint32_t *e = EXACT_EXPANSIONS[v - EXACT_EXPAND];
            for (int k = 0; k < EXACT_MAX_EXPANSION && e[k]; k++) o = put_utf8(o, e[k]);
        } else {
            o = put_utf8(o, (uint32_t)((int32_t)cp + v));
        }
        p += len;
    }
    return o - out;
}

/* ---- Arrow column access ------------------------------------------------------------------ */

typedef struct {
    Py_buffer offsets, data;
    int wide;
    Py_ssize_t start, n;
} Column;

static inline int64_t col_offset(const Column *c, Py_ssize_t i) {
    if (c->wide) return ((const int64_t *)c->offsets.buf)[c->start + i];
    return ((const int32_t *)c->offsets.buf)[c->start + i];
}

/* Check the buffers hold rows start..start+n with ascending offsets inside data. */
static int column_check(const Column *c) {
    size_t width = c->wide ? 8 : 4;
    if (c->start < 0 || c->n < 0 ||
        (size_t)c->offsets.len < (size_t)(c->start + c->n + 1) * width) {
        PyErr_SetString(PyExc_ValueError, "offsets buffer too short for start + n + 1 entries");
        return -1;
    }
    for (Py_ssize_t i = 0; i < c->n; i++) {
        int64_t a = col_offset(c, i), b = col_offset(c, i + 1);
        if (a < 0 || b < a || b > (int64_t)c->data.len) {
            PyErr_Format(PyExc_ValueError, "row %zd: offsets %lld..%lld outside the data buffer",
                         i, (long long)a, (long long)b);
            return -1;
        }
    }
    return 0;
}

static int column_parse(PyObject *args, Column *c, Py_buffer *out) {
    memset(c, 0, sizeof *c);
    int ok = out ? PyArg_ParseTuple(args, "y*y*pnnw*", &c->offsets, &c->data, &c->wide,
                                    &c->start, &c->n, out)
                 : PyArg_ParseTuple(args, "y*y*pnn", &c->offsets, &c->data, &c->wide,
                                    &c->start, &c->n);
    if (!ok) return -1;
    if (column_check(c) < 0) {
        PyBuffer_Release(&c->offsets);
        PyBuffer_Release(&c->data);
        if (out) PyBuffer_Release(out);
        return -1;
    }
    return 0;
}

static void column_release(Column *c) {
    PyBuffer_Release(&c->offsets);
    PyBuffer_Release(&c->data);
}

/* ---- Python interface --------------------------------------------------------------------- */

static PyObject *keys(PyObject *self, PyObject *args) {
    Column c;
    Py_buffer out;
    if (column_parse(args, &c, &out) < 0) return NULL;
    if ((size_t)out.len < (size_t)c.n * DIGEST) {
        PyErr_SetString(PyExc_ValueError, "out must hold 16 bytes per row");
        column_release(&c);
        PyBuffer_Release(&out);
        return NULL;
    }
    Bytes scratch = {0}, bad = {0};
    int failed = 0;
    const uint8_t *data = c.data.buf;
    uint8_t *dst = out.buf;
    Py_BEGIN_ALLOW_THREADS /* the buffers stay held until released below */
    for (Py_ssize_t i = 0; i < c.n && !failed; i++) {
        int64_t a = col_offset(&c, i), b = col_offset(&c, i + 1);
        size_t len = (size_t)(b - a);
        scratch.len = 0;
        if (bytes_reserve(&scratch, len * EXACT_MAX_GROWTH + 1) < 0) {
            failed = 1;
            break;
        }
        ptrdiff_t m = normalize_row(data + a, len, scratch.p);
        if (m < 0) {
            memset(dst + DIGEST * i, 0, DIGEST);
            if (bytes_put_i64(&bad, (int64_t)i) < 0) failed = 1;
            continue;
        }
        rb2_hash(scratch.p, (size_t)m, dst + DIGEST * i, DIGEST);
    }
    Py_END_ALLOW_THREADS
    column_release(&c);
    PyBuffer_Release(&out);
    PyObject *result = failed ? PyErr_NoMemory()
                              : PyBytes_FromStringAndSize((const char *)bad.p, (Py_ssize_t)bad.len);
    free(scratch.p);
    free(bad.p);
    return result;
}

static PyObject *normalize(PyObject *self, PyObject *args) {
    Column c;
    if (column_parse(args, &c, NULL) < 0) return NULL;
    Bytes text = {0}, offsets = {0}, bad = {0};
    int failed = bytes_put_i64(&offsets, 0) < 0;
    const uint8_t *data = c.data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < c.n && !failed; i++) {
        int64_t a = col_offset(&c, i), b = col_offset(&c, i + 1);
        size_t len = (size_t)(b - a);
        if (bytes_reserve(&text, len * EXACT_MAX_GROWTH + 1) < 0) {
            failed = 1;
            break;
        }
        ptrdiff_t m = normalize_row(data + a, len, text.p + text.len);
        if (m < 0) {
            if (bytes_put_i64(&bad, (int64_t)i) < 0) failed = 1;
            m = 0;
        }
        text.len += (size_t)m;
        if (bytes_put_i64(&offsets, (int64_t)text.len) < 0) failed = 1;
    }
    Py_END_ALLOW_THREADS
    column_release(&c);
    PyObject *result = failed ? PyErr_NoMemory()
                              : Py_BuildValue("y#y#y#", text.p ? (const char *)text.p : "",
                                              (Py_ssize_t)text.len, (const char *)offsets.p,
                                              (Py_ssize_t)offsets.len,
                                              bad.p ? (const char *)bad.p : "",
                                              (Py_ssize_t)bad.len);
    free(text.p);
    free(offsets.p);
    free(bad.p);
    return result;
}

static PyMethodDef methods[] = {
    {"keys", keys, METH_VARARGS,
     "keys(offsets, data, wide, start, n, out) -> bytes: 16-byte key per row into out; "
     "int64 indexes of rows that are not valid UTF-8"},
    {"normalize", normalize, METH_VARARGS,
     "normalize(offsets, data, wide, start, n) -> (text, int64 offsets, int64 bad rows)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_exact",
    "Native exact-dedup keys over Arrow string columns (see pipeline.dedup.text).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__exact(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "UNIDATA_VERSION", EXACT_UNIDATA_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
