/*
 * Native BPE merge loop for tokenizer.merges (optional; the pure-Python loop is the fallback).
 *
 * Same algorithm and the same total order as the Python loop, so the merges are identical:
 * unique words as arrays of symbol ids with counts, pair counts in an open-addressing hash
 * table, for every pair the list of words where it (may) occur, and a lazy max-heap whose
 * stored counts are upper bounds of the true counts. The order of pairs: higher count first,
 * then the lexicographically greater byte string of the left token, then of the right token,
 * then the smaller key (a, b) (only reached when two ids have the same bytes).
 *
 * Only the words that contain the merged pair are revisited. A pair's count only grows in the
 * step that creates its newer token; those pairs are (re)pushed then.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t count;
    uint32_t a, b;
    int32_t *words; /* word indices, possibly with (non-adjacent) duplicates and stale ones */
    int32_t nwords, capwords;
    int32_t created_step;
} Pair;

typedef struct {
    int64_t count;
    int32_t pair;
} HeapEntry;

typedef struct {
    /* words */
    int32_t *syms;
    int64_t *start;
    int32_t *len;
    int64_t *wcount;
    int32_t *last_visit;
    int32_t nwords;
    /* tokens */
    unsigned char **tok;
    int32_t *toklen;
    int32_t ntok, captok;
    /* pairs and their hash table (slot = pair index + 1, 0 = empty) */
    Pair *pairs;
    int32_t npairs, cappairs;
    int32_t *slots;
    uint64_t nslots;
    /* heap */
    HeapEntry *heap;
    int64_t heapn, heapcap;
    /* scratch */
    int32_t *scratch;
    unsigned char *consumed;
    int64_t scratchcap, consumedcap;
    int32_t *created;
    int64_t ncreated, capcreated;
} State;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static int grow(void **ptr, int64_t *cap, int64_t need, size_t item) {
    if (need <= *cap) return 0;
    int64_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    void *p = realloc(*ptr, (size_t)n * item);
    if (!p) return -1;
    *ptr = p;
    *cap = n;
    return 0;
}

static int rehash(State *s, uint64_t nslots) {
    int32_t *slots = calloc(nslots, sizeof(int32_t));
    if (!slots) return -1;
    uint64_t mask = nslots - 1;
    for (int32_t i = 0; i < s->npairs; i++) {
        uint64_t key = ((uint64_t)s->pairs[i].a << 32) | s->pairs[i].b;
        uint64_t h = mix(key) & mask;
        while (slots[h]) h = (h + 1) & mask;
        slots[h] = i + 1;
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = nslots;
    return 0;
}

/* Index of pair (a, b), created with count 0 if new; -1 on memory error. */
static int32_t pair_index(State *s, uint32_t a, uint32_t b) {
    uint64_t key = ((uint64_t)a << 32) | b;
    uint64_t mask = s->nslots - 1;
    uint64_t h = mix(key) & mask;
    int32_t slot;
    while ((slot = s->slots[h])) {
        Pair *p = &s->pairs[slot - 1];
        if (p->a == a && p->b == b) return slot - 1;
        h = (h + 1) & mask;
    }
    if (s->npairs == INT32_MAX - 1) return -1;
    if ((uint64_t)(s->npairs + 1) * 2 > s->nslots) {
        if (rehash(s, s->nslots * 2) < 0) return -1;
        return pair_index(s, a, b);
    }
    if (s->npairs == s->cappairs) {
        int64_t cap = s->cappairs;
        if (grow((void **)&s->pairs, &cap, (int64_t)s->npairs + 1, sizeof(Pair)) < 0) return -1;
        s->cappairs = (int32_t)(cap > INT32_MAX ? INT32_MAX : cap);
    }
    int32_t idx = s->npairs++;
    Pair *p = &s->pairs[idx];
    p->count = 0;
    p->a = a;
    p->b = b;
    p->words = NULL;
    p->nwords = p->capwords = 0;
    p->created_step = -1;
    s->slots[h] = idx + 1;
    return idx;
}

static int add_word(Pair *p, int32_t w) {
    if (p->nwords && p->words[p->nwords - 1] == w) return 0;
    if (p->nwords == p->capwords) {
        int32_t cap = p->capwords ? p->capwords * 2 : 4;
        int32_t *q = realloc(p->words, (size_t)cap * sizeof(int32_t));
        if (!q) return -1;
        p->words = q;
        p->capwords = cap;
    }
    p->words[p->nwords++] = w;
    return 0;
}

static void drop_words(Pair *p) {
    free(p->words);
    p->words = NULL;
    p->nwords = p->capwords = 0;
}

static int cmp_tok(const State *s, uint32_t x, uint32_t y) {
    if (x == y) return 0;
    int32_t lx = s->toklen[x], ly = s->toklen[y];
    int c = memcmp(s->tok[x], s->tok[y], (size_t)(lx < ly ? lx : ly));
    if (c) return c;
    return (lx > ly) - (lx < ly);
}

/* 1 when entry x comes before entry y in the heap (x is the better pair). */
static int better(const State *s, const HeapEntry *x, const HeapEntry *y) {
    if (x->count != y->count) return x->count > y->count;
    const Pair *p = &s->pairs[x->pair], *q = &s->pairs[y->pair];
    int c = cmp_tok(s, p->a, q->a);
    if (c) return c > 0;
    c = cmp_tok(s, p->b, q->b);
    if (c) return c > 0;
    if (p->a != q->a) return p->a < q->a;
    return p->b < q->b;
}

static void sift_up(State *s, int64_t i) {
    HeapEntry e = s->heap[i];
    while (i > 0) {
        int64_t parent = (i - 1) >> 1;
        if (!better(s, &e, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = e;
}

static void sift_down(State *s, int64_t i) {
    HeapEntry e = s->heap[i];
    int64_t n = s->heapn;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && better(s, &s->heap[child + 1], &s->heap[child])) child++;
        if (!better(s, &s->heap[child], &e)) break;
        s->heap[i] = s->heap[child];
        i = child;
    }
    s->heap[i] = e;
}

static int heap_push(State *s, int64_t count, int32_t pair) {
    if (grow((void **)&s->heap, &s->heapcap, s->heapn + 1, sizeof(HeapEntry)) < 0) return -1;
    s->heap[s->heapn].count = count;
    s->heap[s->heapn].pair = pair;
    sift_up(s, s->heapn++);
    return 0;
}

static void heap_pop(State *s) {
    s->heap[0] = s->heap[--s->heapn];
    if (s->heapn) sift_down(s, 0);
}

static void state_free(State *s) {
    free(s->syms);
    free(s->start);
    free(s->len);
    free(s->wcount);
    free(s->last_visit);
    if (s->tok)
        for (int32_t i = 0; i < s->ntok; i++) free(s->tok[i]);
    free(s->tok);
    free(s->toklen);
    if (s->pairs)
        for (int32_t i = 0; i < s->npairs; i++) free(s->pairs[i].words);
    free(s->pairs);
    free(s->slots);
    free(s->heap);
    free(s->scratch);
    free(s->consumed);
    free(s->created);
}

/* Replace every (a, b) by new_id in the words listed for the target pair; update counts. */
static int merge_step(State *s, int32_t target, uint32_t new_id, int32_t step) {
    Pair *tp = &s->pairs[target];
    uint32_t a = tp->a, b = tp->b;
    int32_t *list = tp->words;
    int32_t nlist = tp->nwords;
    tp->words = NULL;
    tp->nwords = tp->capwords = 0;
    tp->count = 0;
    s->ncreated = 0;
    int rc = 0;
    for (int32_t li = 0; li < nlist && rc == 0; li++) {
        int32_t w = list[li];
        if (s->last_visit[w] == step) continue;
        s->last_visit[w] = step;
        int32_t *sym = s->syms + s->start[w];
        int32_t n = s->len[w];
        int64_t c = s->wcount[w];
        if (grow((void **)&s->scratch, &s->scratchcap, n, sizeof(int32_t)) < 0) {
            rc = -1;
            break;
        }
        if (s->consumedcap < s->scratchcap) {
            unsigned char *q = realloc(s->consumed, (size_t)s->scratchcap);
            if (!q) {
                rc = -1;
                break;
            }
            s->consumed = q;
            s->consumedcap = s->scratchcap;
        }
        int32_t *nw = s->scratch;
        unsigned char *cons = s->consumed;
        int32_t m = 0, i = 0;
        while (i < n) {
            if (i + 1 < n && (uint32_t)sym[i] == a && (uint32_t)sym[i + 1] == b) {
                nw[m++] = (int32_t)new_id;
                cons[i] = cons[i + 1] = 1;
                i += 2;
            } else {
                nw[m++] = sym[i];
                cons[i] = 0;
                i++;
            }
        }
        if (m == n) continue; /* stale entry: the pair is no longer in this word */
        for (int32_t k = 0; k + 1 < n; k++) {
            if (!(cons[k] || cons[k + 1])) continue;
            int32_t pi = pair_index(s, (uint32_t)sym[k], (uint32_t)sym[k + 1]);
            if (pi < 0) {
                rc = -1;
                break;
            }
            if (pi == target) continue;
            Pair *p = &s->pairs[pi];
            p->count -= c;
            if (p->count == 0) drop_words(p);
        }
        if (rc) break;
        for (int32_t k = 0; k + 1 < m; k++) {
            if ((uint32_t)nw[k] != new_id && (uint32_t)nw[k + 1] != new_id) continue;
            int32_t pi = pair_index(s, (uint32_t)nw[k], (uint32_t)nw[k + 1]);
            if (pi < 0) {
                rc = -1;
                break;
            }
            Pair *p = &s->pairs[pi];
            p->count += c;
            if (add_word(p, w) < 0) {
                rc = -1;
                break;
            }
            if (p->created_step != step) {
                p->created_step = step;
                if (grow((void **)&s->created, &s->capcreated, s->ncreated + 1, sizeof(int32_t)) < 0) {
                    rc = -1;
                    break;
                }
                s->created[s->ncreated++] = pi;
            }
        }
        memcpy(sym, nw, (size_t)m * sizeof(int32_t));
        s->len[w] = m;
    }
    free(list);
    if (rc) return rc;
    /* the target's count is now 0 (merging is greedy left to right, none is left) */
    s->pairs[target].count = 0;
    for (int64_t i = 0; i < s->ncreated; i++) {
        int32_t pi = s->created[i];
        if (s->pairs[pi].count > 0 && heap_push(s, s->pairs[pi].count, pi) < 0) return -1;
    }
    return 0;
}

PyDoc_STRVAR(merge_loop_doc,
             "merge_loop(words, counts, num_merges, callback=None) -> list[tuple[int, int]]\n\n"
             "Run up to num_merges BPE merges over unique words (bytes, each of length >= 2) with\n"
             "their counts (positive ints). Ids 0-255 are the bytes, id 256 + i the token of merge\n"
             "i. Ties go to the lexicographically greater pair of byte strings. `callback(n)`, if\n"
             "given, is called with the number of merges done every 1,000 merges and at the end.");

static PyObject *merge_loop(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"words", "counts", "num_merges", "callback", NULL};
    PyObject *words_obj, *counts_obj, *callback = Py_None;
    Py_ssize_t num_merges;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOn|O", kwlist, &words_obj, &counts_obj,
                                     &num_merges, &callback))
        return NULL;
    if (num_merges < 0) num_merges = 0;
    if (num_merges > INT32_MAX - 512) {
        PyErr_SetString(PyExc_ValueError, "too many merges");
        return NULL;
    }
    PyObject *words = PySequence_Fast(words_obj, "words must be a sequence of bytes");
    if (!words) return NULL;
    PyObject *counts = PySequence_Fast(counts_obj, "counts must be a sequence of ints");
    if (!counts) {
        Py_DECREF(words);
        return NULL;
    }
    Py_ssize_t nwords = PySequence_Fast_GET_SIZE(words);
    if (PySequence_Fast_GET_SIZE(counts) != nwords || nwords > INT32_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "words and counts differ in length (or too many)");
        Py_DECREF(words);
        Py_DECREF(counts);
        return NULL;
    }
    State st;
    memset(&st, 0, sizeof(st));
    State *s = &st;
    PyObject *result = NULL;
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < nwords; i++) {
        PyObject *w = PySequence_Fast_GET_ITEM(words, i);
        if (!PyBytes_Check(w)) {
            PyErr_SetString(PyExc_TypeError, "words must be bytes");
            goto done;
        }
        total += PyBytes_GET_SIZE(w);
    }
    s->nwords = (int32_t)nwords;
    s->syms = malloc((size_t)(total ? total : 1) * sizeof(int32_t));
    s->start = malloc((size_t)(nwords ? nwords : 1) * sizeof(int64_t));
    s->len = malloc((size_t)(nwords ? nwords : 1) * sizeof(int32_t));
    s->wcount = malloc((size_t)(nwords ? nwords : 1) * sizeof(int64_t));
    s->last_visit = malloc((size_t)(nwords ? nwords : 1) * sizeof(int32_t));
    s->captok = 256 + (int32_t)num_merges;
    s->tok = calloc((size_t)s->captok, sizeof(unsigned char *));
    s->toklen = calloc((size_t)s->captok, sizeof(int32_t));
    s->nslots = 1 << 16;
    s->slots = calloc(s->nslots, sizeof(int32_t));
    if (!s->syms || !s->start || !s->len || !s->wcount || !s->last_visit || !s->tok ||
        !s->toklen || !s->slots) {
        PyErr_NoMemory();
        goto done;
    }
    for (int i = 0; i < 256; i++) {
        s->tok[i] = malloc(1);
        if (!s->tok[i]) {
            PyErr_NoMemory();
            goto done;
        }
        s->tok[i][0] = (unsigned char)i;
        s->toklen[i] = 1;
        s->ntok = i + 1;
    }
    int64_t pos = 0;
    for (Py_ssize_t i = 0; i < nwords; i++) {
        PyObject *w = PySequence_Fast_GET_ITEM(words, i);
        long long c = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(counts, i));
        if (c == -1 && PyErr_Occurred()) goto done;
        if (c <= 0) {
            PyErr_SetString(PyExc_ValueError, "counts must be positive");
            goto done;
        }
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(w);
        Py_ssize_t n = PyBytes_GET_SIZE(w);
        if (n > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "word too long");
            goto done;
        }
        s->start[i] = pos;
        s->len[i] = (int32_t)n;
        s->wcount[i] = c;
        s->last_visit[i] = -1;
        for (Py_ssize_t k = 0; k < n; k++) s->syms[pos + k] = data[k];
        for (Py_ssize_t k = 0; k + 1 < n; k++) {
            int32_t pi = pair_index(s, data[k], data[k + 1]);
            if (pi < 0 || add_word(&s->pairs[pi], (int32_t)i) < 0) {
                PyErr_NoMemory();
                goto done;
            }
            s->pairs[pi].count += c;
        }
        pos += n;
    }
    for (int32_t i = 0; i < s->npairs; i++) {
        if (grow((void **)&s->heap, &s->heapcap, s->heapn + 1, sizeof(HeapEntry)) < 0) {
            PyErr_NoMemory();
            goto done;
        }
        s->heap[s->heapn].count = s->pairs[i].count;
        s->heap[s->heapn].pair = i;
        s->heapn++;
    }
    for (int64_t i = s->heapn / 2 - 1; i >= 0; i--) sift_down(s, i);

    result = PyList_New(0);
    if (!result) goto done;
    int32_t done_merges = 0;
    while (done_merges < num_merges && s->heapn) {
        HeapEntry top = s->heap[0];
        int64_t current = s->pairs[top.pair].count;
        if (current != top.count) {
            if (current > 0) {
                s->heap[0].count = current;
                sift_down(s, 0);
            } else {
                heap_pop(s);
            }
            continue;
        }
        heap_pop(s);
        Pair *p = &s->pairs[top.pair];
        uint32_t a = p->a, b = p->b;
        uint32_t new_id = (uint32_t)s->ntok;
        int32_t la = s->toklen[a], lb = s->toklen[b];
        unsigned char *t = malloc((size_t)la + (size_t)lb);
        if (!t) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(t, s->tok[a], (size_t)la);
        memcpy(t + la, s->tok[b], (size_t)lb);
        s->tok[new_id] = t;
        s->toklen[new_id] = la + lb;
        s->ntok++;
        PyObject *item = Py_BuildValue("(II)", a, b);
        if (!item || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
        done_merges++;
        if (merge_step(s, top.pair, new_id, done_merges) < 0) {
            PyErr_NoMemory();
            goto fail;
        }
        if (callback != Py_None && done_merges % 1000 == 0) {
            PyObject *r = PyObject_CallFunction(callback, "i", done_merges);
            if (!r) goto fail;
            Py_DECREF(r);
        }
        if ((done_merges & 255) == 0 && PyErr_CheckSignals() < 0) goto fail;
    }
    if (callback != Py_None) {
        PyObject *r = PyObject_CallFunction(callback, "i", done_merges);
        if (!r) goto fail;
        Py_DECREF(r);
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    state_free(s);
    Py_DECREF(words);
    Py_DECREF(counts);
    return result;
}

static PyMethodDef methods[] = {
    {"merge_loop", (PyCFunction)(void (*)(void))merge_loop, METH_VARARGS | METH_KEYWORDS,
     merge_loop_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bpe", "Native BPE merge loop (see tokenizer.merges).", -1, methods,
};

PyMODINIT_FUNC PyInit__bpe(void) { return PyModule_Create(&module); }
