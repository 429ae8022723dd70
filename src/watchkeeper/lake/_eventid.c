/* MD5 (hex) of every value of an Arrow binary column, for the lake's event ids (`writer.event_ids`).
 *
 * The ids were `hashlib.md5(key).hexdigest()` per value after `to_pylist()`: a Python object per
 * event made and freed three times over, about as dear as the hashing itself. This computes the
 * same digests (RFC 1321, checked against hashlib by the tests) over the column's buffers and
 * returns their hex text back to back, 32 bytes a value, for a string column without a copy.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint32_t a, b, c, d;
} State;

static const uint32_t K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

static inline uint32_t
rotl(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

/* The four rounds, unrolled: a loop choosing the function per step costs twice the instructions. */
#define STEP(f, a, b, c, d, m, k, r) (a) = (b) + rotl((a) + f((b), (c), (d)) + (m) + (k), (r))
#define F(x, y, z) (((x) & (y)) | (~(x) & (z)))
#define G(x, y, z) (((x) & (z)) | ((y) & ~(z)))
#define H(x, y, z) ((x) ^ (y) ^ (z))
#define I(x, y, z) ((y) ^ ((x) | ~(z)))

static void
block(State *s, const unsigned char *p)
{
    uint32_t m[16];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(m, p, sizeof(m));  /* MD5's words are little-endian */
#else
    for (int i = 0; i < 16; i++)
        m[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16
               | (uint32_t)p[4 * i + 3] << 24;
#endif
    uint32_t a = s->a, b = s->b, c = s->c, d = s->d;
    for (int i = 0; i < 16; i += 4) {
        STEP(F, a, b, c, d, m[i], K[i], 7);
        STEP(F, d, a, b, c, m[i + 1], K[i + 1], 12);
        STEP(F, c, d, a, b, m[i + 2], K[i + 2], 17);
        STEP(F, b, c, d, a, m[i + 3], K[i + 3], 22);
    }
    for (int i = 16; i < 32; i += 4) {
        STEP(G, a, b, c, d, m[(5 * i + 1) & 15], K[i], 5);
        STEP(G, d, a, b, c, m[(5 * i + 6) & 15], K[i + 1], 9);
        STEP(G, c, d, a, b, m[(5 * i + 11) & 15], K[i + 2], 14);
        STEP(G, b, c, d, a, m[(5 * i) & 15], K[i + 3], 20);
    }
    for (int i = 32; i < 48; i += 4) {
        STEP(H, a, b, c, d, m[(3 * i + 5) & 15], K[i], 4);
        STEP(H, d, a, b, c, m[(3 * i + 8) & 15], K[i + 1], 11);
        STEP(H, c, d, a, b, m[(3 * i + 11) & 15], K[i + 2], 16);
        STEP(H, b, c, d, a, m[(3 * i + 14) & 15], K[i + 3], 23);
    }
    for (int i = 48; i < 64; i += 4) {
        STEP(I, a, b, c, d, m[(7 * i) & 15], K[i], 6);
        STEP(I, d, a, b, c, m[(7 * i + 7) & 15], K[i + 1], 10);
        STEP(I, c, d, a, b, m[(7 * i + 14) & 15], K[i + 2], 15);
        STEP(I, b, c, d, a, m[(7 * i + 21) & 15], K[i + 3], 21);
    }
    s->a += a;
    s->b += b;
    s->c += c;
    s->d += d;
}

static void
md5_hex(const unsigned char *data, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    State s = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        block(&s, data + i);
    unsigned char tail[128];
    size_t rest = n - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t padded = rest + 1 + 8 <= 64 ? 64 : 128;
    memset(tail + rest + 1, 0, padded - rest - 1 - 8);
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++)
        tail[padded - 8 + k] = (unsigned char)(bits >> (8 * k));
    block(&s, tail);
    if (padded == 128)
        block(&s, tail + 64);
    uint32_t words[4] = {s.a, s.b, s.c, s.d};
    for (int w = 0; w < 4; w++)
        for (int k = 0; k < 4; k++) {
            unsigned char byte = (unsigned char)(words[w] >> (8 * k));
            *out++ = hex[byte >> 4];
            *out++ = hex[byte & 15];
        }
}

/* md5_hex(offsets, data, first, count, wide) -> bytes: the hex digests of `count` values from index
 * `first` of a binary column given by its offsets buffer (int32, or int64 when `wide`) and data. */
static PyObject *
column_md5_hex(PyObject *module, PyObject *args)
{
    Py_buffer offsets, data;
    Py_ssize_t first, count;
    int wide;
    if (!PyArg_ParseTuple(args, "y*y*nnp", &offsets, &data, &first, &count, &wide))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t width = wide ? 8 : 4;
    Py_ssize_t bounds = offsets.len / width;  /* offsets given */
    if (first < 0 || count < 0 || count > PY_SSIZE_T_MAX / 32 || first >= bounds || count > bounds - first - 1) {
        PyErr_SetString(PyExc_ValueError, "offsets do not cover the values asked for");
        goto done;
    }
    /* Every value must lie inside the data buffer before any is read. */
    for (Py_ssize_t i = first; i <= first + count; i++) {
        int64_t at = wide ? ((const int64_t *)offsets.buf)[i] : ((const int32_t *)offsets.buf)[i];
        int64_t before = i == first ? 0 : (wide ? ((const int64_t *)offsets.buf)[i - 1]
                                                 : ((const int32_t *)offsets.buf)[i - 1]);
        if (at < 0 || at > data.len || (i > first && at < before)) {
            PyErr_SetString(PyExc_ValueError, "offsets outside the data buffer");
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, count * 32);
    if (out == NULL)
        goto done;
    char *hex = PyBytes_AS_STRING(out);
    const unsigned char *bytes = data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = first; i < first + count; i++) {
        int64_t lo = wide ? ((const int64_t *)offsets.buf)[i] : ((const int32_t *)offsets.buf)[i];
        int64_t hi = wide ? ((const int64_t *)offsets.buf)[i + 1] : ((const int32_t *)offsets.buf)[i + 1];
        md5_hex(bytes + lo, (size_t)(hi - lo), hex);
        hex += 32;
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef methods[] = {
    {"md5_hex", column_md5_hex, METH_VARARGS,
     "md5_hex(offsets, data, first, count, wide) -> the values' MD5 digests in hex, 32 bytes each."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_eventid", "MD5 digests of an Arrow binary column's values.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__eventid(void)
{
    return PyModule_Create(&module);
}
