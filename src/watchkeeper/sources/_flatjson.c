/* Flat JSON objects (one per line) into Arrow string columns, without a Python object per value.
 *
 * The reading of NXLog / OTRF Windows events spent most of its time making and freeing Python
 * objects: a dict per record, a str per key and value, then a list per column that pa.array
 * walked again (docs/performance.md). A Builder here parses a line, decides per key whether it
 * is kept (asking Python once per spelling and route) and appends the values' text to growing
 * column buffers that become Arrow arrays as they are.
 *
 * It takes only what it renders exactly as the Python reader does, in one of two modes: Windows
 * (`ColumnBuilder.add_flat`: empty texts absent, lists joined by newlines, `Hashes` split, the
 * record number from `RecordNumber`) or JSON lines (`lines.text_of`: empty texts kept, lists joined
 * by commas, floats as Python prints them) — an object whose values are strings, integers, booleans,
 * nulls or arrays of those (and floats, for JSON lines). Anything else (a nested object, a duplicate
 * or escaped key, invalid JSON or UTF-8, an integer beyond 64 bits) is declined before anything is
 * stored, and the Python reader takes that line: it stays the reference, and the tests hold both to
 * the same output.
 *
 * The input is untrusted: every read is bounded by the line's end, every table by a fixed size.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_KEYS 4096       /* spellings remembered, as the Python reader's `_MAX_REMEMBERED` */
#define KEY_TABLE 8192      /* open addressing, a power of two above twice MAX_KEYS */
#define MAX_ROUTES 64       /* distinct routing values (Windows channels) remembered */
#define MAX_ENTRIES 4096    /* keys in one line; beyond, Python takes the line */
#define MAX_DIGITS 19       /* every 19-digit integer fits in 64 bits (with its sign checked) */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    int32_t *offsets;       /* rows + 1 of them */
    uint8_t *valid;         /* a byte per row, packed into a bitmap at build */
    Py_ssize_t rows, rows_cap;
} Column;

typedef struct {
    char *key;
    Py_ssize_t len;
    uint64_t hash;
    PyObject *name;
    Column col;
    int active;             /* holds a value in the current batch */
    uint64_t stamp;         /* the line that last named it: a second time is a duplicate */
} Slot;

typedef struct {
    char *value;            /* NULL: records without a text routing value */
    Py_ssize_t len;
    PyObject *name;         /* str, or None */
    int8_t keep[MAX_KEYS];  /* per slot: -1 not asked yet, 0 dropped, 1 kept */
} Route;

typedef struct {
    int slot;
    int is_text;            /* a JSON string (only a string routes) */
    int late;               /* an array or a boolean: stored after the row's strings and numbers */
    int present;            /* has a value (null has none; nor, for Windows, an empty text) */
    int null;               /* JSON null: for JSON lines, still places its column in the order */
    int escaped;            /* a span of the line still to decode (`settle`) */
    int in_scratch;         /* the text lies in the scratch buffer (decoded), else in the line */
    Py_ssize_t start, len;  /* the text: a span of the line, or of the scratch buffer */
} Entry;

typedef struct {
    PyObject_HEAD
    PyObject *decide;       /* decide(route: str | None, key: str) -> bool */
    char *route_key;        /* the routing field's name, or NULL */
    Py_ssize_t route_key_len;
    int32_t table[KEY_TABLE];
    Slot *slots;
    int nslots;
    Route *routes[MAX_ROUTES];
    int nroutes;
    int *order;             /* slots holding values in this batch, in order of first value */
    int norder;
    Entry *entries;
    char *scratch;
    Py_ssize_t scratch_len, scratch_cap;
    uint64_t serial;
    int last_slots[MAX_ENTRIES]; /* the slot of each key position of the line before (-1: none) */
    int jsonlines;          /* `lines.text_of` rendering, else `windows.scalar` (see the header) */
} Builder;

/* ---------- small buffers ---------- */

static int
grow(char **buf, Py_ssize_t *cap, Py_ssize_t need)
{
    if (need <= *cap)
        return 0;
    Py_ssize_t n = *cap ? *cap : 256;
    while (n < need) {
        if (n > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        n *= 2;
    }
    char *p = PyMem_Realloc(*buf, (size_t)n);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = p;
    *cap = n;
    return 0;
}

static int
scratch_put(Builder *b, const char *s, Py_ssize_t n)
{
    if (grow(&b->scratch, &b->scratch_cap, b->scratch_len + n) < 0)
        return -1;
    memcpy(b->scratch + b->scratch_len, s, (size_t)n);
    b->scratch_len += n;
    return 0;
}

/* ---------- JSON pieces; each returns the position after what it read, or NULL to decline ---------- */

static inline const unsigned char *
skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The first of the next bytes that may end or escape a string (a quote, a backslash, a control
 * character or a byte >= 0x80), or a point before it: eight bytes are tested at once while they
 * hold none of them (SWAR: a byte is zero in `v` where `(v - 0x01..) & ~v & 0x80..` is set). */
static inline const unsigned char *
plain_run(const unsigned char *p, const unsigned char *end)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t quote = w ^ (ones * '"'), slash = w ^ (ones * '\\');
        uint64_t special = ((quote - ones) & ~quote) | ((slash - ones) & ~slash) | (w - ones * 0x20) | w;
        if (special & highs)
            break;
        p += 8;
    }
    return p;
}

/* One UTF-8 sequence starting at a byte >= 0x80, strictly (no overlongs, no surrogates). */
static inline const unsigned char *
utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    if (c < 0xC2)
        return NULL;
    if (c < 0xE0) {
        if (end - p < 2 || (p[1] & 0xC0) != 0x80)
            return NULL;
        return p + 2;
    }
    if (c < 0xF0) {
        if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return NULL;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
            return NULL;
        return p + 3;
    }
    if (c < 0xF5) {
        if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return NULL;
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
            return NULL;
        return p + 4;
    }
    return NULL;
}

static inline int
hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    if (end - p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = (v << 4) | d;
    }
    *out = v;
    return 0;
}

/* The end of a string (after its closing quote; `p` is after the opening one), every escape and
 * UTF-8 sequence checked on the way, `*escaped` set when it holds an escape; NULL when invalid.
 * Decoding waits until the value is known to be kept (`decode`): most escaped text (a Windows
 * event's rendered `Message`) belongs to fields a hunt does not read. */
static const unsigned char *
string_end(const unsigned char *p, const unsigned char *end, int *escaped)
{
    while (p < end) {
        p = plain_run(p, end);
        if (p >= end)
            break;
        unsigned c = *p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c >= 0x80) {
            if ((p = utf8_seq(p, end)) == NULL)
                return NULL;
            continue;
        }
        if (c != '\\') {
            p++;
            continue;
        }
        *escaped = 1;
        if (end - p < 2)
            return NULL;
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            continue;
        case 'u': {
            unsigned cp, low;
            if (hex4(p + 2, end, &cp) < 0)
                return NULL;
            p += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return NULL;  /* a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &low) < 0
                    || low < 0xDC00 || low > 0xDFFF)
                    return NULL;
                p += 6;
            }
            continue;
        }
        default:
            return NULL;
        }
    }
    return NULL;
}

/* The text of a string `string_end` checked (between its quotes), escapes decoded, appended to
 * the scratch buffer; -1 when out of memory. */
static int
decode(Builder *b, const unsigned char *p, const unsigned char *end)
{
    while (p < end) {
        const unsigned char *slash = memchr(p, '\\', (size_t)(end - p));
        const unsigned char *stop = slash ? slash : end;
        if (stop > p && scratch_put(b, (const char *)p, stop - p) < 0)
            return -1;
        if (slash == NULL)
            break;
        p = slash;
        char one;
        switch (p[1]) {
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': {
            unsigned cp = 0, low = 0xDC00;  /* both checked by `string_end` */
            hex4(p + 2, end, &cp);
            p += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                hex4(p + 2, end, &low);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
            char u[4];
            Py_ssize_t n;
            if (cp < 0x80) {
                u[0] = (char)cp;
                n = 1;
            } else if (cp < 0x800) {
                u[0] = (char)(0xC0 | (cp >> 6));
                u[1] = (char)(0x80 | (cp & 0x3F));
                n = 2;
            } else if (cp < 0x10000) {
                u[0] = (char)(0xE0 | (cp >> 12));
                u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[2] = (char)(0x80 | (cp & 0x3F));
                n = 3;
            } else {
                u[0] = (char)(0xF0 | (cp >> 18));
                u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[3] = (char)(0x80 | (cp & 0x3F));
                n = 4;
            }
            if (scratch_put(b, u, n) < 0)
                return -1;
            continue;
        }
        default: one = (char)p[1]; break;  /* ", \ and / stand for themselves */
        }
        if (scratch_put(b, &one, 1) < 0)
            return -1;
        p += 2;
    }
    return 0;
}

/* A string value; `p` is after its opening quote. Its text is a span of the line, to be decoded
 * (`settle`) if it holds escapes and is kept. */
static const unsigned char *
string_value(const unsigned char *line, const unsigned char *p, const unsigned char *end, Entry *e)
{
    int escaped = 0;
    const unsigned char *after = string_end(p, end, &escaped);
    if (after == NULL)
        return NULL;
    e->in_scratch = 0;
    e->escaped = escaped;
    e->start = p - line;
    e->len = after - 1 - p;
    return after;
}

/* An entry's escaped text decoded into the scratch buffer, once; -1 when out of memory. */
static int
settle(Builder *b, const unsigned char *line, Entry *e)
{
    if (!e->escaped)
        return 0;
    Py_ssize_t mark = b->scratch_len;
    if (decode(b, line + e->start, line + e->start + e->len) < 0)
        return -1;
    e->escaped = 0;
    e->in_scratch = 1;
    e->start = mark;
    e->len = b->scratch_len - mark;
    return 0;
}

/* An integer as JSON writes it, its magnitude and sign given back (for the record number).
 * Floats, leading zeros, `-0` and integers beyond 64 bits are declined. */
static const unsigned char *
integer(const unsigned char *p, const unsigned char *end, uint64_t *value, int *negative)
{
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return NULL;
    uint64_t v = 0;
    int digits = 0;
    if (*p == '0') {
        if (neg)
            return NULL;  /* -0: Python renders it 0 */
        p++;
        digits = 1;
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            if (++digits > MAX_DIGITS)
                return NULL;
            v = v * 10 + (uint64_t)(*p - '0');
            p++;
        }
    }
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9')))
        return NULL;
    if (neg && v > (uint64_t)1 << 63)
        return NULL;
    *value = v;
    *negative = neg;
    return p;
}

/* The end of a JSON number's text, `*is_float` set when it has a fraction or an exponent. */
static const unsigned char *
number_end(const unsigned char *p, const unsigned char *end, int *is_float)
{
    const unsigned char *q = p;
    if (q < end && *q == '-')
        q++;
    if (q >= end || *q < '0' || *q > '9')
        return NULL;
    if (*q == '0')
        q++;
    else
        while (q < end && *q >= '0' && *q <= '9')
            q++;
    *is_float = 0;
    if (q < end && *q == '.') {
        if (++q >= end || *q < '0' || *q > '9')
            return NULL;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
        *is_float = 1;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        if (++q < end && (*q == '+' || *q == '-'))
            q++;
        if (q >= end || *q < '0' || *q > '9')
            return NULL;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
        *is_float = 1;
    }
    return q;
}

/* A float's text as `lines.number_text` prints it, into the scratch buffer: whole numbers below
 * 1e16 without a fraction, others as Python's repr. 1 done, 0 declined, -1 error. */
static int
float_text(Builder *b, const unsigned char *s, Py_ssize_t n)
{
    /* Without an exponent and with at most 15 significant digits (DBL_DIG), a decimal is the
     * shortest text of its nearest double, so Python's repr prints its own digits: trailing
     * zeros of the fraction dropped, whole numbers without one. Below 1e-4 repr switches to
     * exponents: those, and every other number, go through Python's own conversion below. */
    const unsigned char *p = s, *end = s + n;
    int neg = p < end && *p == '-';
    p += neg;
    const unsigned char *whole = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    const unsigned char *whole_end = p, *frac = p, *frac_end = p;
    if (p < end && *p == '.') {
        frac = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        frac_end = p;
        while (frac_end > frac && frac_end[-1] == '0')
            frac_end--;
    }
    if (p == end) {
        int zero_whole = whole_end - whole == 1 && *whole == '0';
        Py_ssize_t leading = 0;
        if (zero_whole)
            while (frac + leading < frac_end && frac[leading] == '0')
                leading++;
        Py_ssize_t digits = (zero_whole ? 0 : whole_end - whole) + (frac_end - frac) - leading;
        if (digits == 0)
            return scratch_put(b, "0", 1) < 0 ? -1 : 1;  /* 0.0 and -0.0 print 0 */
        if (digits <= 15 && (!zero_whole || leading <= 3)) {
            if ((neg && scratch_put(b, "-", 1) < 0) || scratch_put(b, (const char *)whole, whole_end - whole) < 0)
                return -1;
            if (frac_end > frac && (scratch_put(b, ".", 1) < 0
                                    || scratch_put(b, (const char *)frac, frac_end - frac) < 0))
                return -1;
            return 1;
        }
    }
    char buf[64];
    if (n >= (Py_ssize_t)sizeof(buf))
        return 0;
    memcpy(buf, s, (size_t)n);
    buf[n] = 0;
    double v = PyOS_string_to_double(buf, NULL, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (!isfinite(v))
        return 0;
    if (v == floor(v) && fabs(v) < 1e16) {
        char out[32];
        int k = snprintf(out, sizeof(out), "%.0f", v == 0 ? 0.0 : v);  /* -0.0 prints 0 */
        if (k <= 0 || k >= (int)sizeof(out))
            return 0;
        return scratch_put(b, out, k) < 0 ? -1 : 1;
    }
    char *r = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL)
        return -1;
    int done = scratch_put(b, r, (Py_ssize_t)strlen(r));
    PyMem_Free(r);
    return done < 0 ? -1 : 1;
}

/* A number value: an integer's text is its own (`integer` rules), a float's is rendered into
 * the scratch buffer (JSON lines only; the Windows reader leaves floats to Python). */
static const unsigned char *
number_value(Builder *b, const unsigned char *line, const unsigned char *p, const unsigned char *end,
             Entry *e, uint64_t *value, int *negative, int *failed)
{
    int is_float = 0;
    const unsigned char *after = number_end(p, end, &is_float);
    if (after == NULL)
        return NULL;
    if (!is_float) {
        if (integer(p, end, value, negative) != after)
            return NULL;
        e->in_scratch = 0;
        e->start = p - line;
        e->len = after - p;
        return after;
    }
    if (!b->jsonlines)
        return NULL;
    Py_ssize_t mark = b->scratch_len;
    int done = float_text(b, p, after - p);
    if (done <= 0) {
        *failed = done < 0;
        return NULL;
    }
    *negative = 1;  /* no record number */
    e->in_scratch = 1;
    e->start = mark;
    e->len = b->scratch_len - mark;
    return after;
}

static inline const unsigned char *
word(const unsigned char *p, const unsigned char *end, const char *w, Py_ssize_t n)
{
    if (end - p < n || memcmp(p, w, (size_t)n) != 0)
        return NULL;
    return p + n;
}

/* A list value's text in the scratch buffer: its items' texts joined by newlines with empty
 * texts and nulls left out (`windows.scalar`), or for JSON lines joined by commas with nulls left
 * out (`lines.text_of`). Nested arrays and objects are declined. */
static const unsigned char *
list_value(Builder *b, const unsigned char *line, const unsigned char *p, const unsigned char *end,
           Entry *e, int *failed)
{
    Py_ssize_t mark = b->scratch_len;
    int parts = 0;
    p = skip_ws(p, end);
    if (p < end && *p == ']') {
        p++;
        goto done;
    }
    for (;;) {
        if (p >= end)
            return NULL;
        const unsigned char *start = p, *after;
        Entry item = {0, 0, 0, 0, 0, 0, 0, 0, 0};
        Py_ssize_t before = b->scratch_len;
        if (parts && scratch_put(b, b->jsonlines ? "," : "\n", 1) < 0) {
            *failed = 1;
            return NULL;
        }
        Py_ssize_t at = b->scratch_len;
        if (*p == '"') {
            after = string_value(line, p + 1, end, &item);
            if (after == NULL)
                return NULL;
            if (settle(b, line, &item) < 0) {
                *failed = 1;
                return NULL;
            }
            if (item.len == 0 && !b->jsonlines) {
                b->scratch_len = before;  /* an empty string is no part */
            } else if (item.len == 0) {
                /* an empty part */
            } else if (!item.in_scratch) {
                if (scratch_put(b, (const char *)line + item.start, item.len) < 0) {
                    *failed = 1;
                    return NULL;
                }
            } else if (item.start != at) {
                /* Decoded after the separator already: nothing to move. */
                return NULL;
            }
            parts += item.len != 0 || b->jsonlines;
        } else if (*p == 'n') {
            if ((after = word(p, end, "null", 4)) == NULL)
                return NULL;
            b->scratch_len = before;
        } else if (*p == 't' || *p == 'f') {
            after = *p == 't' ? word(p, end, "true", 4) : word(p, end, "false", 5);
            if (after == NULL)
                return NULL;
            if (scratch_put(b, (const char *)start, after - start) < 0) {
                *failed = 1;
                return NULL;
            }
            parts++;
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            uint64_t v;
            int neg;
            if ((after = number_value(b, line, p, end, &item, &v, &neg, failed)) == NULL)
                return NULL;
            if (!item.in_scratch && scratch_put(b, (const char *)start, after - start) < 0) {
                *failed = 1;
                return NULL;
            }
            parts++;
        } else {
            return NULL;  /* nested arrays, objects: Python's rendering */
        }
        p = skip_ws(after, end);
        if (p >= end)
            return NULL;
        if (*p == ']') {
            p++;
            break;
        }
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
done:
    e->in_scratch = 1;
    e->start = mark;
    e->len = b->scratch_len - mark;
    return p;
}

/* ---------- hash lists ---------- */

#define N_HASHES 6
static const char *const HASH_NAMES[N_HASHES] = {"SHA1", "MD5", "SHA256", "IMPHASH", "SHA384", "SHA512"};

typedef struct {
    int algo;               /* index in HASH_NAMES */
    const char *text;
    Py_ssize_t len;
} Digest;

/* Python's `str.isspace` over ASCII, as `str.strip` uses it. */
static inline int
py_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F);
}

/* `ALGO=digest,ALGO=digest` split as `windows.split_hashes` does, the first of each algorithm
 * kept, into `out` (in order); -1 when the text is not ASCII (Python's case rules apply then). */
static int
split_hashes(const char *text, Py_ssize_t len, Digest *out, int n, int *taken)
{
    int has_eq = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        if ((unsigned char)text[i] >= 0x80)
            return -1;
        has_eq |= text[i] == '=';
    }
    if (!has_eq)
        return n;
    const char *p = text, *end = text + len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (eq != NULL && eq + 1 < stop) {
            const char *a = p, *a_end = eq, *d = eq + 1, *d_end = stop;
            while (a < a_end && py_space((unsigned char)*a))
                a++;
            while (a_end > a && py_space((unsigned char)a_end[-1]))
                a_end--;
            while (d < d_end && py_space((unsigned char)*d))
                d++;
            while (d_end > d && py_space((unsigned char)d_end[-1]))
                d_end--;
            for (int k = 0; k < N_HASHES; k++) {
                size_t name_len = strlen(HASH_NAMES[k]);
                if ((size_t)(a_end - a) != name_len || taken[k])
                    continue;
                int same = 1;
                for (size_t j = 0; j < name_len && same; j++) {
                    char c = a[j];
                    if (c >= 'a' && c <= 'z')
                        c = (char)(c - 'a' + 'A');
                    same = c == HASH_NAMES[k][j];
                }
                if (same) {
                    taken[k] = 1;
                    out[n].algo = k;
                    out[n].text = d;
                    out[n].len = d_end - d;
                    n++;
                    break;
                }
            }
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return n;
}

/* ---------- keys and routes ---------- */

static inline uint64_t
fnv1a(const unsigned char *s, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

/* The slot of a key spelling (made on first sight), -1 when the table is full, -2 on error. */
static int
slot_of(Builder *b, const unsigned char *key, Py_ssize_t n)
{
    uint64_t h = fnv1a(key, n);
    size_t i = (size_t)h & (KEY_TABLE - 1);
    for (;;) {
        int32_t s = b->table[i];
        if (s < 0)
            break;
        Slot *slot = &b->slots[s];
        if (slot->hash == h && slot->len == n && memcmp(slot->key, key, (size_t)n) == 0)
            return s;
        i = (i + 1) & (KEY_TABLE - 1);
    }
    if (b->nslots >= MAX_KEYS)
        return -1;
    PyObject *name = PyUnicode_DecodeUTF8((const char *)key, n, "strict");
    if (name == NULL)
        return -2;
    char *copy = PyMem_Malloc(n ? (size_t)n : 1);
    if (copy == NULL) {
        Py_DECREF(name);
        PyErr_NoMemory();
        return -2;
    }
    memcpy(copy, key, (size_t)n);
    int s = b->nslots++;
    Slot *slot = &b->slots[s];
    memset(slot, 0, sizeof(*slot));
    slot->key = copy;
    slot->len = n;
    slot->hash = h;
    slot->name = name;
    b->table[i] = s;
    return s;
}

/* The route of a routing value (NULL value: records without one), NULL when full or on error. */
static Route *
route_of(Builder *b, const char *value, Py_ssize_t n, int *failed)
{
    for (int r = 0; r < b->nroutes; r++) {
        Route *route = b->routes[r];
        if (value == NULL ? route->value == NULL
                          : (route->value != NULL && route->len == n && memcmp(route->value, value, (size_t)n) == 0))
            return route;
    }
    if (b->nroutes >= MAX_ROUTES)
        return NULL;
    Route *route = PyMem_Malloc(sizeof(Route));
    if (route == NULL) {
        PyErr_NoMemory();
        *failed = 1;
        return NULL;
    }
    memset(route->keep, -1, sizeof(route->keep));
    route->value = NULL;
    route->len = 0;
    if (value == NULL) {
        route->name = Py_NewRef(Py_None);
    } else {
        route->name = PyUnicode_DecodeUTF8(value, n, "strict");
        route->value = PyMem_Malloc(n ? (size_t)n : 1);
        if (route->name == NULL || route->value == NULL) {
            Py_XDECREF(route->name);
            PyMem_Free(route->value);
            PyMem_Free(route);
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            *failed = 1;
            return NULL;
        }
        memcpy(route->value, value, (size_t)n);
        route->len = n;
    }
    b->routes[b->nroutes++] = route;
    return route;
}

/* Whether the route keeps a slot's field: asked of Python once per (route, spelling). */
static int
kept(Builder *b, Route *route, int s)
{
    int8_t k = route->keep[s];
    if (k >= 0)
        return k;
    PyObject *answer = PyObject_CallFunctionObjArgs(b->decide, route->name, b->slots[s].name, NULL);
    if (answer == NULL)
        return -1;
    int truth = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    if (truth < 0)
        return -1;
    route->keep[s] = (int8_t)truth;
    return truth;
}

/* ---------- columns ---------- */

static int
column_fill(Column *c, Py_ssize_t rows)
{
    /* Rows up to `rows` without a value: null. */
    if (rows + 1 > c->rows_cap) {
        Py_ssize_t n = c->rows_cap ? c->rows_cap : 1024;
        while (n < rows + 1)
            n *= 2;
        int32_t *o = PyMem_Realloc(c->offsets, (size_t)n * sizeof(int32_t));
        if (o == NULL)
            return -1;
        c->offsets = o;
        uint8_t *v = PyMem_Realloc(c->valid, (size_t)n);
        if (v == NULL)
            return -1;
        c->valid = v;
        c->rows_cap = n;
    }
    if (c->rows == 0)
        c->offsets[0] = 0;
    int32_t at = (int32_t)c->len;
    for (Py_ssize_t r = c->rows; r < rows; r++) {
        c->valid[r] = 0;
        c->offsets[r + 1] = at;
    }
    if (rows > c->rows)
        c->rows = rows;
    return 0;
}

static inline int
column_append(Column *c, Py_ssize_t row, const char *text, Py_ssize_t n)
{
    if (n > INT32_MAX - c->len) {  /* Arrow string offsets are 32-bit */
        PyErr_SetString(PyExc_OverflowError, "a column of this batch exceeds 2 GiB");
        return -1;
    }
    if (row == c->rows && row + 2 <= c->rows_cap && c->len + n <= c->cap && row > 0) {
        /* The common case: the next row, room for it. */
        memcpy(c->data + c->len, text, (size_t)n);
        c->len += n;
        c->valid[row] = 1;
        c->offsets[row + 1] = (int32_t)c->len;
        c->rows = row + 1;
        return 0;
    }
    if (column_fill(c, row + 1) < 0 || grow(&c->data, &c->cap, c->len + n) < 0) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    memcpy(c->data + c->len, text, (size_t)n);
    c->len += n;
    c->valid[row] = 1;
    c->offsets[row + 1] = (int32_t)c->len;
    c->rows = row + 1;
    return 0;
}

/* ---------- the type ---------- */

static void
builder_clear_batch(Builder *b)
{
    for (int i = 0; i < b->norder; i++) {
        Slot *slot = &b->slots[b->order[i]];
        slot->active = 0;
        slot->col.len = 0;
        slot->col.rows = 0;
    }
    b->norder = 0;
}

static int
Builder_init(Builder *b, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"decide", "route", "jsonlines", NULL};
    PyObject *decide;
    const char *route = NULL;
    Py_ssize_t route_len = 0;
    int jsonlines = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oz#|$p", kwlist, &decide, &route, &route_len, &jsonlines))
        return -1;
    if (!PyCallable_Check(decide)) {
        PyErr_SetString(PyExc_TypeError, "decide must be callable");
        return -1;
    }
    if (b->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Builder already initialised");
        return -1;
    }
    b->slots = PyMem_Calloc(MAX_KEYS, sizeof(Slot));
    b->order = PyMem_Calloc(MAX_KEYS, sizeof(int));
    b->entries = PyMem_Calloc(MAX_ENTRIES, sizeof(Entry));
    if (b->slots == NULL || b->order == NULL || b->entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (route != NULL) {
        b->route_key = PyMem_Malloc(route_len ? (size_t)route_len : 1);
        if (b->route_key == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(b->route_key, route, (size_t)route_len);
        b->route_key_len = route_len;
    }
    for (int i = 0; i < KEY_TABLE; i++)
        b->table[i] = -1;
    for (int i = 0; i < MAX_ENTRIES; i++)
        b->last_slots[i] = -1;
    Py_INCREF(decide);
    b->decide = decide;
    b->jsonlines = jsonlines;
    return 0;
}

static int
Builder_traverse(Builder *b, visitproc visit, void *arg)
{
    Py_VISIT(b->decide);
    return 0;
}

static int
Builder_clear(Builder *b)
{
    Py_CLEAR(b->decide);
    return 0;
}

static void
Builder_dealloc(Builder *b)
{
    PyObject_GC_UnTrack(b);
    Builder_clear(b);
    if (b->slots != NULL) {
        for (int s = 0; s < b->nslots; s++) {
            Slot *slot = &b->slots[s];
            PyMem_Free(slot->key);
            Py_XDECREF(slot->name);
            PyMem_Free(slot->col.data);
            PyMem_Free(slot->col.offsets);
            PyMem_Free(slot->col.valid);
        }
    }
    for (int r = 0; r < b->nroutes; r++) {
        Py_XDECREF(b->routes[r]->name);
        PyMem_Free(b->routes[r]->value);
        PyMem_Free(b->routes[r]);
    }
    PyMem_Free(b->slots);
    PyMem_Free(b->order);
    PyMem_Free(b->entries);
    PyMem_Free(b->scratch);
    PyMem_Free(b->route_key);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

/* One line as row `row`: 1 taken (`*record` set), 0 declined (nothing stored), -1 error. */
static int
add_one(Builder *b, const unsigned char *line, const unsigned char *end, Py_ssize_t row, long long number,
        long long *record)
{
    const unsigned char *p = skip_ws(line, end);
    int failed = 0, n = 0;
    uint64_t serial = ++b->serial;
    int route_entry = -1;
    int windows = !b->jsonlines;
    *record = number;
    b->scratch_len = 0;

    if (p >= end || *p != '{')
        return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
        goto object_end;
    }
    for (;;) {
        if (p >= end || *p != '"')
            return 0;
        const unsigned char *key = ++p;
        p = plain_run(p, end);
        while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) {
            if (*p >= 0x80) {
                if ((p = utf8_seq(p, end)) == NULL)
                    return 0;
            } else {
                p++;
            }
        }
        if (p >= end || *p != '"')
            return 0;  /* an escape in a key, a control character, the line's end */
        Py_ssize_t key_len = p - key;
        p = skip_ws(p + 1, end);
        if (p >= end || *p != ':')
            return 0;
        p = skip_ws(p + 1, end);
        if (p >= end || n >= MAX_ENTRIES)
            return 0;
        /* Lines of one log repeat their keys in order: the key at this position last time is
         * compared first, the table searched only when it differs. */
        int s = b->last_slots[n];
        if (s < 0 || b->slots[s].len != key_len || memcmp(b->slots[s].key, key, (size_t)key_len) != 0) {
            s = slot_of(b, key, key_len);
            if (s == -2)
                return -1;
            if (s < 0)
                return 0;
            b->last_slots[n] = s;
        }
        Slot *slot = &b->slots[s];
        if (slot->stamp == serial)
            return 0;  /* a key given twice: JSON keeps the last value, in the first one's place */
        slot->stamp = serial;
        Entry *e = &b->entries[n];
        memset(e, 0, sizeof(*e));
        e->slot = s;
        const unsigned char *start = p;
        if (b->route_key != NULL && key_len == b->route_key_len && memcmp(key, b->route_key, (size_t)key_len) == 0)
            route_entry = n;
        if (*p == '"') {
            p = string_value(line, p + 1, end, e);
            if (p == NULL)
                return 0;
            e->is_text = 1;
            e->present = e->len > 0 || !windows;
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            uint64_t v;
            int neg;
            p = number_value(b, line, p, end, e, &v, &neg, &failed);
            if (p == NULL)
                return failed ? -1 : 0;
            e->present = 1;
            if (windows && key_len == 12 && memcmp(key, "RecordNumber", 12) == 0 && !neg && v < (uint64_t)1 << 63)
                *record = (long long)v;
        } else if (*p == 'n') {
            if ((p = word(p, end, "null", 4)) == NULL)
                return 0;
            e->null = 1;
        } else if (*p == 't' || *p == 'f') {
            p = *p == 't' ? word(p, end, "true", 4) : word(p, end, "false", 5);
            if (p == NULL)
                return 0;
            e->start = start - line;
            e->len = p - start;
            e->late = windows;
            e->present = 1;
        } else if (*p == '[') {
            p = list_value(b, line, p + 1, end, e, &failed);
            if (p == NULL)
                return failed ? -1 : 0;
            e->late = windows;
            e->present = e->len > 0 || !windows;
        } else {
            return 0;  /* an object, not JSON */
        }
        n++;
        p = skip_ws(p, end);
        if (p >= end)
            return 0;
        if (*p == '}') {
            p++;
            break;
        }
        if (*p != ',')
            return 0;
        p = skip_ws(p + 1, end);
    }
object_end:
    if (skip_ws(p, end) != end)
        return 0;

    /* The routing value: the route field's text when it is a non-empty string (decoded if
     * escaped; the scratch buffer no longer moves), else none. */
    const char *route_value = NULL;
    Py_ssize_t route_len = 0;
    if (route_entry >= 0 && b->entries[route_entry].is_text && b->entries[route_entry].len) {
        Entry *e = &b->entries[route_entry];
        if (settle(b, line, e) < 0)
            return -1;
        route_value = e->in_scratch ? b->scratch + e->start : (const char *)line + e->start;
        route_len = e->len;
    }
    Route *route = route_of(b, route_value, route_len, &failed);
    if (route == NULL)
        return failed ? -1 : 0;
    /* Decide every kept field before storing any: a failing `decide` leaves no half row. */
    for (int i = 0; i < n; i++) {
        Entry *e = &b->entries[i];
        if (!e->present && !(e->null && !windows))
            continue;
        int k = kept(b, route, e->slot);
        if (k < 0)
            return -1;
        e->present &= k;
        e->null &= k;
        /* Decoded now, before any pointer into the scratch buffer is taken. */
        if (e->present && settle(b, line, e) < 0)
            return -1;
    }
    /* Windows: digests of the kept hash lists (`Hashes`, then `Hash`), fields of their own where
     * the route keeps them and the record has none of that name. */
    Digest digests[N_HASHES];
    int slots_of[N_HASHES];
    int ndigests = 0, kept_digests = 0, taken[N_HASHES] = {0};
    for (int field = 0; field < 2 && windows; field++) {
        const char *name = field == 0 ? "Hashes" : "Hash";
        Py_ssize_t name_len = field == 0 ? 6 : 4;
        for (int i = 0; i < n; i++) {
            Entry *e = &b->entries[i];
            Slot *slot = &b->slots[e->slot];
            if (!e->present || slot->len != name_len || memcmp(slot->key, name, (size_t)name_len) != 0)
                continue;
            const char *text = e->in_scratch ? b->scratch + e->start : (const char *)line + e->start;
            ndigests = split_hashes(text, e->len, digests, ndigests, taken);
            if (ndigests < 0)
                return 0;
        }
    }
    for (int d = 0; d < ndigests; d++) {
        const char *name = HASH_NAMES[digests[d].algo];
        int s = slot_of(b, (const unsigned char *)name, (Py_ssize_t)strlen(name));
        if (s == -2)
            return -1;
        if (s < 0)
            return 0;
        int k = kept(b, route, s);
        if (k < 0)
            return -1;
        int own = 0;
        for (int i = 0; i < n && !own; i++)
            own = b->entries[i].slot == s && b->entries[i].present;
        if (!k || own)
            continue;  /* not read, or the record gives the field a value itself */
        slots_of[kept_digests] = s;
        digests[kept_digests++] = digests[d];
    }
    for (int i = 0; i < n; i++) {
        Entry *e = &b->entries[i];
        if (!e->present)
            continue;
        Slot *slot = &b->slots[e->slot];
        if (slot->col.rows > row || slot->col.len + e->len > INT32_MAX) {
            /* Checked before any value is stored: an error leaves no half row. */
            PyErr_SetString(slot->col.rows > row ? PyExc_ValueError : PyExc_OverflowError,
                            slot->col.rows > row ? "rows must be added in order" : "a column of this batch exceeds 2 GiB");
            return -1;
        }
    }
    /* Stored in the Python reader's order (Windows: strings and numbers, then the others, then
     * digests): a batch's columns are ordered by first value, and of two spellings of a field the
     * first column's value wins a row holding both (`events.fold_case`). */
    for (int late = 0; late < 2; late++) {
        for (int i = 0; i < n; i++) {
            Entry *e = &b->entries[i];
            Slot *slot = &b->slots[e->slot];
            if (!windows && e->null && !slot->active) {
                /* JSON lines order columns by first key, null or not (`jsonblocks._by_line`). */
                slot->active = 1;
                b->order[b->norder++] = e->slot;
            }
            if (!e->present || e->late != late)
                continue;
            const char *text = e->in_scratch ? b->scratch + e->start : (const char *)line + e->start;
            if (column_append(&slot->col, row, text, e->len) < 0)
                return -1;
            if (!slot->active) {
                slot->active = 1;
                b->order[b->norder++] = e->slot;
            }
        }
    }
    for (int d = 0; d < kept_digests; d++) {
        Slot *slot = &b->slots[slots_of[d]];
        if (slot->col.rows > row) {
            PyErr_SetString(PyExc_ValueError, "rows must be added in order");
            return -1;
        }
        if (column_append(&slot->col, row, digests[d].text, digests[d].len) < 0)
            return -1;
        if (!slot->active) {
            slot->active = 1;
            b->order[b->norder++] = slots_of[d];
        }
    }
    return 1;
}

static int
ready(Builder *b)
{
    if (b->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Builder not initialised");
        return 0;
    }
    return 1;
}

/* The arguments both methods start with — a bytes-like line or block, a row number — checked,
 * the buffer acquired (release it): 0, or -1 with an exception set. */
static int
begin(Builder *b, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage, Py_buffer *view,
      Py_ssize_t *row)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", usage, want);
        return -1;
    }
    if (!ready(b))
        return -1;
    *row = PyLong_AsSsize_t(args[1]);
    if (*row == -1 && PyErr_Occurred())
        return -1;
    if (*row < 0) {
        PyErr_SetString(PyExc_ValueError, "row must not be negative");
        return -1;
    }
    return PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE);
}

static PyObject *
Builder_add(Builder *b, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t row;
    if (begin(b, args, nargs, 3, "add(line, row, number)", &view, &row) < 0)
        return NULL;
    long long number = PyLong_AsLongLong(args[2]);
    if (number == -1 && PyErr_Occurred()) {
        PyBuffer_Release(&view);
        return NULL;
    }
    long long record;
    const unsigned char *line = view.buf;
    int done = add_one(b, line, line + view.len, row, number, &record);
    PyBuffer_Release(&view);
    if (done < 0)
        return NULL;
    return PyLong_FromLongLong(done ? record : -1);
}

/* add_lines(block, row): the block's lines (each ended by a newline, the last maybe not) as rows
 * from `row` on, up to the first line declined; returns (how many were taken, whether that was
 * every line). */
static PyObject *
Builder_add_lines(Builder *b, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t row;
    if (begin(b, args, nargs, 2, "add_lines(block, row)", &view, &row) < 0)
        return NULL;
    const unsigned char *p = view.buf, *end = p + view.len;
    Py_ssize_t taken = 0;
    int done = 1;
    while (p < end) {
        const unsigned char *stop = memchr(p, '\n', (size_t)(end - p));
        if (stop == NULL)
            stop = end;
        long long record;
        done = add_one(b, p, stop, row + taken, row + taken, &record);
        if (done <= 0)
            break;
        taken++;
        p = stop + 1;
    }
    PyBuffer_Release(&view);
    if (done < 0)
        return NULL;
    return Py_BuildValue("(nO)", taken, p >= end ? Py_True : Py_False);
}

/* The batch's columns as (name, first row with a value, validity bitmap or None, int32 offsets, data),
 * in order of first value; starts a new batch. */
static PyObject *
Builder_build(Builder *b, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (b->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Builder not initialised");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < b->norder; i++) {
        Slot *slot = &b->slots[b->order[i]];
        Column *c = &slot->col;
        if (c->rows == 0)
            continue;  /* only nulls (JSON lines): no column, as in the Python reader */
        if (c->rows > n) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_ValueError, "build(n) with fewer rows than were added");
            return NULL;
        }
        if (column_fill(c, n) < 0) {
            Py_DECREF(out);
            return PyErr_NoMemory();
        }
        PyObject *validity;
        Py_ssize_t nulls = 0, first = -1;
        for (Py_ssize_t r = 0; r < n; r++) {
            if (first < 0 && c->valid[r])
                first = r;
            nulls += !c->valid[r];
        }
        if (nulls == 0) {
            validity = Py_NewRef(Py_None);
        } else {
            validity = PyBytes_FromStringAndSize(NULL, (n + 7) / 8);
            if (validity != NULL) {
                unsigned char *bits = (unsigned char *)PyBytes_AS_STRING(validity);
                memset(bits, 0, (size_t)(n + 7) / 8);
                for (Py_ssize_t r = 0; r < n; r++)
                    bits[r >> 3] |= (unsigned char)(c->valid[r] << (r & 7));
            }
        }
        PyObject *offsets = PyBytes_FromStringAndSize((const char *)c->offsets, (n + 1) * (Py_ssize_t)sizeof(int32_t));
        PyObject *data = PyBytes_FromStringAndSize(c->data, c->len);
        PyObject *at = PyLong_FromSsize_t(first);
        PyObject *item = (validity && offsets && data && at) ? PyTuple_Pack(5, slot->name, at, validity, offsets, data)
                                                             : NULL;
        Py_XDECREF(at);
        Py_XDECREF(validity);
        Py_XDECREF(offsets);
        Py_XDECREF(data);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    builder_clear_batch(b);
    return out;
}

static PyMethodDef Builder_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Builder_add, METH_FASTCALL,
     "add(line, row, number) -> the record number, or -1 when the line is left to the Python reader."},
    {"add_lines", (PyCFunction)(void (*)(void))Builder_add_lines, METH_FASTCALL,
     "add_lines(block, row) -> (how many of the block's lines became rows from `row` on, whether all did)."},
    {"build", (PyCFunction)Builder_build, METH_O,
     "build(n) -> [(name, first row, validity or None, offsets, data)] of the batch's n rows; starts the next."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "watchkeeper.sources._flatjson.Builder",
    .tp_doc = PyDoc_STR("Flat JSON lines into Arrow string columns (see the module's source)."),
    .tp_basicsize = sizeof(Builder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Builder_init,
    .tp_dealloc = (destructor)Builder_dealloc,
    .tp_traverse = (traverseproc)Builder_traverse,
    .tp_clear = (inquiry)Builder_clear,
    .tp_methods = Builder_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_flatjson", "Flat JSON lines into Arrow string columns.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__flatjson(void)
{
    if (PyType_Ready(&BuilderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Builder", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_KEYS", MAX_KEYS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
