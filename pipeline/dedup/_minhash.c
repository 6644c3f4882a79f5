/* Native MinHash signatures: text in, (documents x num_perm) uint32 signatures out.
 *
 * One pass per document computes what pipeline.dedup.minhash.MinHasher's numpy path
 * computes for a batch, bit for bit (pipeline/dedup/text.py, ShingleHasher):
 *
 *   words     maximal runs of ASCII letters, ASCII digits and non-ASCII code points other
 *             than the separators U+00A0..U+00BF, U+2000..U+203F and U+3000..U+3002;
 *             ASCII letters lower-cased. This is the numpy path's rule on UTF-8 bytes
 *             (lead bytes C2 / E2 / E3 of those ranges), stated on code points.
 *   word      h = sum_t byte_t * B**t mod 2**32 over the word's UTF-8 bytes (lone
 *             surrogates encoded as three bytes, like "surrogatepass"), B = 0x01000193
 *   shingle   words i .. i+n-1: mix64(sum_j word[i+j] * K_j mod 2**64); a document with
 *             1 .. n-1 words has one shingle of all its words, one without words none
 *   minimum   sig[k] = min over shingles of a_k * x mod 2**32, x = (shingle >> 32) | 1;
 *             0xFFFFFFFF where a document has no shingle
 *
 * The permutation minimum is the hot loop: per shingle, all num_perm products and minima,
 * written as plain loops over k that the compiler vectorises (-O3). Perms are taken in
 * blocks of PERM_BLOCK so one block's minima and multipliers stay in vector registers
 * while the document's shingles stream past. On x86-64 an AVX2 build of that loop is
 * chosen at import when the CPU has AVX2 (the baseline build is SSE2 only).
 *
 * API (module pipeline.dedup._minhash):
 *   signatures(texts, a, k, kernel=-1) -> (bytearray, bytearray)
 *       texts: list or tuple of str; a: buffer of num_perm uint32 multipliers; k: buffer
 *       of ngram uint64 word weights. Returns the signatures (len(texts) * num_perm
 *       uint32, row-major, native order) and the shingle count per text (int64).
 *       kernel: -1 best available, 0 baseline, 1 AVX2 (ValueError if unavailable).
 *   signatures_utf8(data, offsets, a, k, kernel=-1) -> (bytearray, bytearray)
 *       the same for texts given as UTF-8 bytes (an Arrow string column's data buffer)
 *       and n + 1 int64 offsets into it: no Python str per text. Words follow the numpy
 *       path's byte rule, so valid UTF-8 gives signatures() of the decoded texts.
 *   shingle_sets_utf8(data, offsets, k) -> (bytearray, bytearray)
 *       each text's sorted distinct 64-bit shingle hashes (ShingleHasher.shingle_sets),
 *       concatenated (uint64), and their count per text (int64).
 *   intersections(a_values, a_offsets, b_values, b_offsets) -> bytearray
 *       per row r, the number of values common to the sorted distinct uint64 rows
 *       a_values[a_offsets[r]:a_offsets[r+1]] and b's row r (int64): Jaccard numerators.
 *   kernels() -> tuple of the available kernel names, best last
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define POLY_BASE 0x01000193u
#define PERM_BLOCK 64

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX2_CLONE 1
#endif

/* ---------------------------------------------------------------- permutation minimum */

/* acc[k] = min(acc[k], min_i a[k] * xs[i]) for k < np. Blocks of PERM_BLOCK perms with a
 * compile-time length keep their minima in registers across all of a document's shingles
 * (the shingle loop is inside the block loop; within a block, per shingle, all perms). */
#define MINIMUM_BODY                                                                      \
    {                                                                                     \
        size_t k0 = 0;                                                                    \
        for (; k0 + PERM_BLOCK <= np; k0 += PERM_BLOCK) {                                 \
            uint32_t m[PERM_BLOCK], aa[PERM_BLOCK];                                       \
            memcpy(m, acc + k0, sizeof m);                                                \
            memcpy(aa, a + k0, sizeof aa);                                                \
            for (size_t i = 0; i < nx; i++) {                                             \
                const uint32_t x = xs[i];                                                 \
                for (int k = 0; k < PERM_BLOCK; k++) {                                    \
                    const uint32_t v = aa[k] * x;                                         \
                    m[k] = v < m[k] ? v : m[k];                                           \
                }                                                                         \
            }                                                                             \
            memcpy(acc + k0, m, sizeof m);                                                \
        }                                                                                 \
        const size_t rest = np - k0;                                                      \
        if (rest) {                                                                       \
            uint32_t *restrict m = acc + k0;                                              \
            const uint32_t *restrict aa = a + k0;                                         \
            for (size_t i = 0; i < nx; i++) {                                             \
                const uint32_t x = xs[i];                                                 \
                for (size_t k = 0; k < rest; k++) {                                       \
                    const uint32_t v = aa[k] * x;                                         \
                    m[k] = v < m[k] ? v : m[k];                                           \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }

typedef void (*minimum_fn)(const uint32_t *restrict, uint32_t *restrict, size_t,
                           const uint32_t *restrict, size_t);

static void minimum_base(const uint32_t *restrict a, uint32_t *restrict acc, size_t np,
                         const uint32_t *restrict xs, size_t nx) MINIMUM_BODY

#ifdef HAVE_AVX2_CLONE
__attribute__((target("avx2")))
static void minimum_avx2(const uint32_t *restrict a, uint32_t *restrict acc, size_t np,
                         const uint32_t *restrict xs, size_t nx) MINIMUM_BODY
#endif

/* ---------------------------------------------------------------- words and shingles */

typedef struct {
    uint32_t *words; /* word hashes of the current document */
    uint32_t *xs;    /* its shingles' permutation inputs */
    size_t cap;      /* capacity of both, in elements */
} Scratch;

static int reserve(Scratch *s, size_t n) {
    if (n <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < n) cap *= 2;
    uint32_t *w = realloc(s->words, cap * sizeof *w);
    if (!w) return -1;
    s->words = w;
    uint32_t *x = realloc(s->xs, cap * sizeof *x);
    if (!x) return -1;
    s->xs = x;
    s->cap = cap;
    return 0;
}

/* ASCII: the lower-cased byte if it is a word byte (a-z after folding, 0-9), else 0 */
static unsigned char ascii_word[128];

/* B**t mod 2**32 for t < POW_N; longer words take pow_slow */
#define POW_N 4096
static uint32_t powers[POW_N];

static void init_tables(void) {
    for (int c = 0; c < 128; c++) {
        int b = (c >= 'A' && c <= 'Z') ? c | 0x20 : c;
        ascii_word[c] = ((b >= 'a' && b <= 'z') || (b >= '0' && b <= '9')) ? (unsigned char)b : 0;
    }
    uint32_t p = 1;
    for (int t = 0; t < POW_N; t++, p *= POLY_BASE) powers[t] = p;
}

static uint32_t pow_slow(uint64_t t) {
    uint32_t r = 1, b = POLY_BASE;
    for (; t; t >>= 1, b *= b)
        if (t & 1) r *= b;
    return r;
}

static inline uint32_t pow_at(uint64_t t) { return t < POW_N ? powers[t] : pow_slow(t); }

static inline int is_separator(Py_UCS4 c) {
    return (c >= 0xA0 && c <= 0xBF) || (c >= 0x2000 && c <= 0x203F) || (c >= 0x3000 && c <= 0x3002);
}

/* Add the UTF-8 bytes of non-ASCII code point c at positions t.. of the word hash h. */
static inline void hash_code_point(Py_UCS4 c, uint32_t *h, uint64_t *t) {
    unsigned char b[4];
    int n;
    if (c < 0x800) {
        b[0] = (unsigned char)(0xC0 | (c >> 6));
        b[1] = (unsigned char)(0x80 | (c & 0x3F));
        n = 2;
    } else if (c < 0x10000) { /* surrogates too, as "surrogatepass" encodes them */
        b[0] = (unsigned char)(0xE0 | (c >> 12));
        b[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (c & 0x3F));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (c >> 18));
        b[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
        b[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        b[3] = (unsigned char)(0x80 | (c & 0x3F));
        n = 4;
    }
    for (int i = 0; i < n; i++) *h += b[i] * pow_at((*t)++);
}

/* Word hashes of one string of PyUnicode kind T into s->words; returns the word count,
 * or -1 when out of memory. At most one word per two code points, plus one.
 * Branch-free on ASCII: a word boundary is data, not a jump (they are unpredictable);
 * each position's hash term is a table power, so no multiply chain runs along a word. */
#define WORDS_OF(NAME, T)                                                                 \
    static Py_ssize_t NAME(const T *text, Py_ssize_t len, Scratch *s) {                   \
        if (reserve(s, (size_t)len / 2 + 2)) return -1;                                   \
        uint32_t *out = s->words;                                                         \
        Py_ssize_t nw = 0;                                                                \
        uint32_t h = 0;                                                                   \
        uint64_t t = 0; /* bytes in the current word; 0 between words */                  \
        for (Py_ssize_t i = 0; i < len; i++) {                                            \
            const Py_UCS4 c = text[i];                                                    \
            if (c < 0x80) {                                                               \
                const uint32_t b = ascii_word[c];                                         \
                out[nw] = h; /* kept only when a word ends here */                        \
                nw += (t != 0) & (b == 0);                                                \
                const uint32_t keep = 0u - (uint32_t)(b != 0); /* masks, not a jump */    \
                h = (h + b * pow_at(t)) & keep;                                           \
                t = (t + 1) & (uint64_t)(int64_t)(int32_t)keep;                           \
            } else if (is_separator(c)) {                                                 \
                out[nw] = h;                                                              \
                nw += t != 0;                                                             \
                h = 0;                                                                    \
                t = 0;                                                                    \
            } else {                                                                      \
                hash_code_point(c, &h, &t);                                               \
            }                                                                             \
        }                                                                                 \
        if (t) out[nw++] = h;                                                             \
        return nw;                                                                        \
    }

WORDS_OF(words_ucs1, Py_UCS1)
WORDS_OF(words_ucs2, Py_UCS2)
WORDS_OF(words_ucs4, Py_UCS4)

/* Word hashes of UTF-8 bytes (an Arrow string column) into s->words, by the numpy path's
 * rule on bytes (ShingleHasher._words): a byte is a word byte unless it is an ASCII
 * non-alphanumeric or lies in a separator sequence C2 [A0-FF], E2 80 xx or E3 80 [00-82];
 * sequences are found at every byte, so even invalid UTF-8 splits as the numpy path does
 * within a document. Valid UTF-8 gives words_ucs*'s hashes: those hash the same bytes. */
static Py_ssize_t words_utf8(const unsigned char *text, Py_ssize_t len, Scratch *s) {
    if (reserve(s, (size_t)len / 2 + 2)) return -1;
    uint32_t *out = s->words;
    Py_ssize_t nw = 0;
    uint32_t h = 0;
    uint64_t t = 0;
    Py_ssize_t sep_end = 0; /* bytes before this index belong to a separator sequence */
    Py_ssize_t i = 0;
    while (i < len) {
        if (i >= sep_end) { /* a run of ASCII outside any separator sequence: branch-free */
            for (; i < len && text[i] < 0x80; i++) {
                const uint32_t b = ascii_word[text[i]];
                out[nw] = h;
                nw += (t != 0) & (b == 0);
                const uint32_t keep = 0u - (uint32_t)(b != 0);
                h = (h + b * pow_at(t)) & keep;
                t = (t + 1) & (uint64_t)(int64_t)(int32_t)keep;
            }
            if (i == len) break;
        }
        const unsigned char c = text[i];
        if (c == 0xC2) {
            if (i + 1 < len && text[i + 1] >= 0xA0 && sep_end < i + 2) sep_end = i + 2;
        } else if (c == 0xE2 || c == 0xE3) {
            if (i + 2 < len && text[i + 1] == 0x80 && (c == 0xE2 || text[i + 2] <= 0x82) &&
                sep_end < i + 3)
                sep_end = i + 3;
        }
        if (i < sep_end) { /* in a separator sequence (an ASCII byte only in invalid UTF-8) */
            out[nw] = h;
            nw += t != 0;
            h = 0;
            t = 0;
        } else {
            h += c * pow_at(t++);
        }
        i++;
    }
    if (t) out[nw++] = h;
    return nw;
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Shingle inputs x of nw word hashes into xs; returns the shingle count. Scalar on
 * purpose: vectorised 64-bit multiplies (SSE2 has none) are slower than imul. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static size_t shingles(const uint32_t *w, size_t nw, const uint64_t *K, size_t n, uint32_t *xs) {
    if (nw == 0) return 0;
    if (nw < n) {
        uint64_t acc = 0;
        for (size_t j = 0; j < nw; j++) acc += (uint64_t)w[j] * K[j];
        xs[0] = (uint32_t)(mix64(acc) >> 32) | 1u;
        return 1;
    }
    const size_t ns = nw - n + 1;
    for (size_t i = 0; i < ns; i++) {
        uint64_t acc = 0;
        for (size_t j = 0; j < n; j++) acc += (uint64_t)w[i + j] * K[j];
        xs[i] = (uint32_t)(mix64(acc) >> 32) | 1u;
    }
    return ns;
}

/* The 64-bit shingle hashes mix64(sum_j word[i+j] * K_j) of nw word hashes into out (the
 * numpy path's ShingleHasher.hashes); returns their count. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static size_t shingles64(const uint32_t *w, size_t nw, const uint64_t *K, size_t n,
                         uint64_t *out) {
    if (nw == 0) return 0;
    if (nw < n) {
        uint64_t acc = 0;
        for (size_t j = 0; j < nw; j++) acc += (uint64_t)w[j] * K[j];
        out[0] = mix64(acc);
        return 1;
    }
    const size_t ns = nw - n + 1;
    for (size_t i = 0; i < ns; i++) {
        uint64_t acc = 0;
        for (size_t j = 0; j < n; j++) acc += (uint64_t)w[i + j] * K[j];
        out[i] = mix64(acc);
    }
    return ns;
}

/* Sort v[0..n) ascending with an LSD radix sort (eight byte passes through tmp, passes on
 * which every value has the same byte skipped): several times qsort's speed on hashes. */
static void sort_u64(uint64_t *v, uint64_t *tmp, size_t n) {
    if (n < 2) return;
    size_t count[8][256];
    memset(count, 0, sizeof count);
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) count[b][(v[i] >> (8 * b)) & 0xFF]++;
    uint64_t *src = v, *dst = tmp;
    for (int b = 0; b < 8; b++) {
        size_t *c = count[b];
        if (c[(src[0] >> (8 * b)) & 0xFF] == n) continue; /* one bucket: order unchanged */
        size_t sum = 0;
        for (int k = 0; k < 256; k++) {
            const size_t x = c[k];
            c[k] = sum;
            sum += x;
        }
        for (size_t i = 0; i < n; i++) dst[c[(src[i] >> (8 * b)) & 0xFF]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != v) memcpy(v, src, n * sizeof *v);
}

/* ---------------------------------------------------------------- module */

static minimum_fn best_kernel = minimum_base;
static int best_level = 0;

/* The permutation-minimum kernel of level -1 (best), 0 (baseline) or 1 (AVX2); NULL with
 * ValueError for an unknown or unavailable level. */
static minimum_fn pick_kernel(int level) {
    if (level == -1) return best_kernel;
    if (level == 0) return minimum_base;
    if (level == 1) {
#ifdef HAVE_AVX2_CLONE
        if (best_level >= 1) return minimum_avx2;
#endif
        PyErr_SetString(PyExc_ValueError, "the AVX2 kernel is not available on this CPU");
        return NULL;
    }
    PyErr_SetString(PyExc_ValueError, "kernel must be -1 (best), 0 (baseline) or 1 (AVX2)");
    return NULL;
}

/* Private aligned copies of the multipliers a (uint32) and the word weights k (uint64);
 * 0, or -1 with an exception set. */
static int load_params(const Py_buffer *abuf, const Py_buffer *kbuf, uint32_t **a, size_t *np,
                       uint64_t **K, size_t *n) {
    *a = NULL;
    *K = NULL;
    if ((abuf && (abuf->len % 4 || abuf->len == 0)) || kbuf->len % 8 || kbuf->len == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "a must hold num_perm >= 1 uint32 values and k ngram >= 1 uint64 values");
        return -1;
    }
    *n = (size_t)kbuf->len / 8;
    *K = malloc(*n * sizeof **K);
    if (abuf) {
        *np = (size_t)abuf->len / 4;
        *a = malloc(*np * sizeof **a);
    }
    if (!*K || (abuf && !*a)) {
        free(*a);
        free(*K);
        *a = NULL;
        *K = NULL;
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*K, kbuf->buf, *n * sizeof **K);
    if (abuf) memcpy(*a, abuf->buf, *np * sizeof **a);
    return 0;
}

/* A private copy of an offsets buffer: n + 1 int64, non-decreasing, from 0 .. limit. Returns
 * n, or -1 with ValueError naming `what`. */
static Py_ssize_t load_offsets(const Py_buffer *ob, Py_ssize_t limit, const char *what,
                               int64_t **out) {
    *out = NULL;
    if (ob->len % 8 || ob->len < 8) {
        PyErr_Format(PyExc_ValueError, "%s must hold n + 1 >= 1 int64 values", what);
        return -1;
    }
    const Py_ssize_t n = ob->len / 8 - 1;
    int64_t *o = malloc((size_t)ob->len);
    if (!o) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(o, ob->buf, (size_t)ob->len);
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (o[i] < 0 || o[i] > limit || (i && o[i] < o[i - 1])) {
            PyErr_Format(PyExc_ValueError,
                         "%s[%zd] = %lld: offsets must be non-decreasing within 0 .. %zd", what,
                         i, (long long)o[i], limit);
            free(o);
            return -1;
        }
    }
    *out = o;
    return n;
}

/* One document's signature from its nw words in s->words: every row value starts at the
 * maximum, then takes the minimum over the document's shingles; returns the shingle count. */
static int64_t sign_words(minimum_fn kernel, const uint32_t *a, size_t np, const uint64_t *K,
                          size_t n, Scratch *s, size_t nw, uint32_t *row) {
    for (size_t k = 0; k < np; k++) row[k] = 0xFFFFFFFFu;
    const size_t nx = shingles(s->words, nw, K, n, s->xs);
    if (nx) kernel(a, row, np, s->xs, nx);
    return (int64_t)nx;
}

static PyObject *signatures(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"texts", "a", "k", "kernel", NULL};
    PyObject *texts;
    Py_buffer abuf, kbuf;
    int level = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oy*y*|i", kwlist, &texts, &abuf, &kbuf,
                                     &level))
        return NULL;
    PyObject *seq = NULL, *sig = NULL, *counts = NULL, *result = NULL;
    PyObject **items = NULL;
    Scratch s = {NULL, NULL, 0};
    const minimum_fn kernel = pick_kernel(level);
    if (!kernel) goto done;
    /* aligned private copies: the buffers may be any bytes-like object */
    uint32_t *a;
    uint64_t *K;
    size_t np, n;
    if (load_params(&abuf, &kbuf, &a, &np, &K, &n)) goto done;

    seq = PySequence_Fast(texts, "texts must be a list or tuple of str");
    if (!seq) goto free_params;
    const Py_ssize_t nd = PySequence_Fast_GET_SIZE(seq);
    /* own a reference to every text, so the GIL can be released while they are read */
    items = PyMem_Malloc((size_t)(nd ? nd : 1) * sizeof *items);
    if (!items) {
        PyErr_NoMemory();
        goto free_params;
    }
    for (Py_ssize_t d = 0; d < nd; d++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, d);
        if (!PyUnicode_Check(t)) {
            PyErr_Format(PyExc_TypeError, "texts[%zd] is %.100s, not str", d, Py_TYPE(t)->tp_name);
            for (Py_ssize_t e = 0; e < d; e++) Py_DECREF(items[e]);
            PyMem_Free(items);
            items = NULL;
            goto free_params;
        }
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(t) < 0) { /* legacy strings get their canonical form */
            for (Py_ssize_t e = 0; e < d; e++) Py_DECREF(items[e]);
            PyMem_Free(items);
            items = NULL;
            goto free_params;
        }
#endif
        Py_INCREF(t);
        items[d] = t;
    }
    sig = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(nd * np * 4));
    counts = PyByteArray_FromStringAndSize(NULL, nd * 8);
    if (!sig || !counts) goto free_items;
    uint32_t *out = (uint32_t *)PyByteArray_AS_STRING(sig);
    int64_t *cnt = (int64_t *)PyByteArray_AS_STRING(counts);
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t d = 0; d < nd && !oom; d++) {
        PyObject *t = items[d];
        const Py_ssize_t len = PyUnicode_GET_LENGTH(t);
        const void *data = PyUnicode_DATA(t);
        Py_ssize_t nw;
        switch (PyUnicode_KIND(t)) {
        case PyUnicode_1BYTE_KIND: nw = words_ucs1(data, len, &s); break;
        case PyUnicode_2BYTE_KIND: nw = words_ucs2(data, len, &s); break;
        default: nw = words_ucs4(data, len, &s); break;
        }
        if (nw < 0) {
            oom = 1;
            break;
        }
        cnt[d] = sign_words(kernel, a, np, K, n, &s, (size_t)nw, out + (size_t)d * np);
    }
    Py_END_ALLOW_THREADS
    if (oom) {
        PyErr_NoMemory();
        goto free_items;
    }
    result = PyTuple_Pack(2, sig, counts);

free_items:
    for (Py_ssize_t d = 0; d < nd; d++) Py_DECREF(items[d]);
    PyMem_Free(items);
free_params:
    free(a);
    free(K);
done:
    free(s.words);
    free(s.xs);
    Py_XDECREF(seq);
    Py_XDECREF(sig);
    Py_XDECREF(counts);
    PyBuffer_Release(&abuf);
    PyBuffer_Release(&kbuf);
    return result;
}

static PyObject *signatures_utf8(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"data", "offsets", "a", "k", "kernel", NULL};
    Py_buffer dbuf, obuf, abuf, kbuf;
    int level = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*y*y*|i", kwlist, &dbuf, &obuf, &abuf,
                                     &kbuf, &level))
        return NULL;
    PyObject *sig = NULL, *counts = NULL, *result = NULL;
    uint32_t *a = NULL;
    uint64_t *K = NULL;
    int64_t *off = NULL;
    size_t np = 0, n = 0;
    Scratch s = {NULL, NULL, 0};
    const minimum_fn kernel = pick_kernel(level);
    if (!kernel || load_params(&abuf, &kbuf, &a, &np, &K, &n)) goto done;
    const Py_ssize_t nd = load_offsets(&obuf, dbuf.len, "offsets", &off);
    if (nd < 0) goto done;
    sig = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(nd * np * 4));
    counts = PyByteArray_FromStringAndSize(NULL, nd * 8);
    if (!sig || !counts) goto done;
    uint32_t *out = (uint32_t *)PyByteArray_AS_STRING(sig);
    int64_t *cnt = (int64_t *)PyByteArray_AS_STRING(counts);
    const unsigned char *data = dbuf.buf;
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t d = 0; d < nd; d++) {
        const Py_ssize_t nw = words_utf8(data + off[d], (Py_ssize_t)(off[d + 1] - off[d]), &s);
        if (nw < 0) {
            oom = 1;
            break;
        }
        cnt[d] = sign_words(kernel, a, np, K, n, &s, (size_t)nw, out + (size_t)d * np);
    }
    Py_END_ALLOW_THREADS
    if (oom) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyTuple_Pack(2, sig, counts);
done:
    free(a);
    free(K);
    free(off);
    free(s.words);
    free(s.xs);
    Py_XDECREF(sig);
    Py_XDECREF(counts);
    PyBuffer_Release(&dbuf);
    PyBuffer_Release(&obuf);
    PyBuffer_Release(&abuf);
    PyBuffer_Release(&kbuf);
    return result;
}

static PyObject *shingle_sets_utf8(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"data", "offsets", "k", NULL};
    Py_buffer dbuf, obuf, kbuf;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*y*", kwlist, &dbuf, &obuf, &kbuf))
        return NULL;
    PyObject *values = NULL, *counts = NULL, *result = NULL;
    uint32_t *unused = NULL;
    uint64_t *K = NULL, *vals = NULL, *tmp = NULL;
    int64_t *off = NULL;
    size_t np = 0, n = 0, nv = 0, vcap = 0, tcap = 0;
    Scratch s = {NULL, NULL, 0};
    if (load_params(NULL, &kbuf, &unused, &np, &K, &n)) goto done;
    const Py_ssize_t nd = load_offsets(&obuf, dbuf.len, "offsets", &off);
    if (nd < 0) goto done;
    counts = PyByteArray_FromStringAndSize(NULL, nd * 8);
    if (!counts) goto done;
    int64_t *cnt = (int64_t *)PyByteArray_AS_STRING(counts);
    const unsigned char *data = dbuf.buf;
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t d = 0; d < nd && !oom; d++) {
        const Py_ssize_t nw = words_utf8(data + off[d], (Py_ssize_t)(off[d + 1] - off[d]), &s);
        if (nw < 0) {
            oom = 1;
            break;
        }
        const size_t need = 2 * ((size_t)nw + 1); /* shingles, then the sort's buffer */
        if (need > tcap) {
            uint64_t *t = realloc(tmp, need * sizeof *t);
            if (!t) {
                oom = 1;
                break;
            }
            tmp = t;
            tcap = need;
        }
        const size_t ns = shingles64(s.words, (size_t)nw, K, n, tmp);
        sort_u64(tmp, tmp + need / 2, ns);
        if (nv + ns > vcap) {
            size_t cap = vcap ? vcap : 1 << 16;
            while (cap < nv + ns) cap *= 2;
            uint64_t *v = realloc(vals, cap * sizeof *v);
            if (!v) {
                oom = 1;
                break;
            }
            vals = v;
            vcap = cap;
        }
        size_t u = 0; /* distinct values, as np.unique */
        for (size_t i = 0; i < ns; i++)
            if (i == 0 || tmp[i] != tmp[i - 1]) vals[nv + u++] = tmp[i];
        nv += u;
        cnt[d] = (int64_t)u;
    }
    Py_END_ALLOW_THREADS
    if (oom) {
        PyErr_NoMemory();
        goto done;
    }
    values = PyByteArray_FromStringAndSize((const char *)vals, (Py_ssize_t)(nv * 8));
    if (values) result = PyTuple_Pack(2, values, counts);
done:
    free(K);
    free(off);
    free(vals);
    free(tmp);
    free(s.words);
    free(s.xs);
    Py_XDECREF(values);
    Py_XDECREF(counts);
    PyBuffer_Release(&dbuf);
    PyBuffer_Release(&obuf);
    PyBuffer_Release(&kbuf);
    return result;
}

static PyObject *intersections(PyObject *self, PyObject *args) {
    Py_buffer av, ao, bv, bo;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &av, &ao, &bv, &bo)) return NULL;
    PyObject *counts = NULL;
    int64_t *aoff = NULL, *boff = NULL;
    Py_ssize_t na = -1, nb = -1;
    if (av.len % 8 || bv.len % 8 || ((uintptr_t)av.buf | (uintptr_t)bv.buf) % 8) {
        PyErr_SetString(PyExc_ValueError, "values must be 8-byte aligned uint64 buffers");
        goto done;
    }
    na = load_offsets(&ao, av.len / 8, "a_offsets", &aoff);
    if (na >= 0) nb = load_offsets(&bo, bv.len / 8, "b_offsets", &boff);
    if (na < 0 || nb < 0) goto done;
    if (na != nb) {
        PyErr_Format(PyExc_ValueError, "a has %zd rows and b %zd", na, nb);
        goto done;
    }
    counts = PyByteArray_FromStringAndSize(NULL, na * 8);
    if (!counts) goto done;
    int64_t *cnt = (int64_t *)PyByteArray_AS_STRING(counts);
    const uint64_t *a = av.buf, *b = bv.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < na; r++) {
        int64_t i = aoff[r], j = boff[r], c = 0;
        const int64_t ie = aoff[r + 1], je = boff[r + 1];
        while (i < ie && j < je) {
            const uint64_t x = a[i], y = b[j];
            c += x == y;
            i += x <= y;
            j += y <= x;
        }
        cnt[r] = c;
    }
    Py_END_ALLOW_THREADS
done:
    free(aoff);
    free(boff);
    PyBuffer_Release(&av);
    PyBuffer_Release(&ao);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&bo);
    return counts;
}

static PyObject *kernels(PyObject *self, PyObject *unused) {
    return best_level >= 1 ? Py_BuildValue("(ss)", "baseline", "avx2")
                           : Py_BuildValue("(s)", "baseline");
}

static PyMethodDef methods[] = {
    {"signatures", (PyCFunction)(void (*)(void))signatures, METH_VARARGS | METH_KEYWORDS,
     "signatures(texts, a, k, kernel=-1) -> (signatures, shingle counts) as bytearrays"},
    {"signatures_utf8", (PyCFunction)(void (*)(void))signatures_utf8,
     METH_VARARGS | METH_KEYWORDS,
     "signatures_utf8(data, offsets, a, k, kernel=-1) -> (signatures, shingle counts)"},
    {"shingle_sets_utf8", (PyCFunction)(void (*)(void))shingle_sets_utf8,
     METH_VARARGS | METH_KEYWORDS,
     "shingle_sets_utf8(data, offsets, k) -> (sorted distinct shingle hashes, count per text)"},
    {"intersections", intersections, METH_VARARGS,
     "intersections(a_values, a_offsets, b_values, b_offsets) -> common values per row"},
    {"kernels", kernels, METH_NOARGS, "kernels() -> names of the available kernels"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_minhash",
    "Native MinHash signatures (see pipeline.dedup.minhash.MinHasher).", -1, methods,
};

PyMODINIT_FUNC PyInit__minhash(void) {
    init_tables();
#ifdef HAVE_AVX2_CLONE
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        best_kernel = minimum_avx2;
        best_level = 1;
    }
#endif
    return PyModule_Create(&module);
}
