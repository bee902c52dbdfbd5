/* Optional compiled hot loops: scanners of canonical events (operators/events.py: decode_trades
 * and book_levels), and a few loops that profiles put at the top (fmt, scan_ids, set_levels,
 * side_top, kraken_crc, okx_crc). Each has a pure-Python reference that stays the fallback.
 *
 * Why C: decoding a group of canonical trade messages into columns was ~1 us of Python per trade
 * (regex scan, str -> int, zip), a quarter of the candle and ticker flows' time. This module does
 * only the scanning and the column building; it accepts exactly what the pure-Python path's
 * regular expression accepts (operators/events.py: _batch_pattern) and parses prices and
 * quantities through the same Python memo (so `operators.fixed.parse` stays the one decimal
 * parser). Anything else returns None and the caller takes the per-message path, which words the
 * dead letters. book_levels turns a book event's [[px, qty], ...] into level tuples through the
 * handlers' memos of validated units: ~270 ns of Python a level, half of decoding a book event.
 * fmt prints exact units as a decimal string (operators.fixed.fmt): every candle and ticker
 * record prints two to four of them, and the Python version was a tenth of the candle operator.
 * scan_ids tells whether a run of trade ids is rising (then none can be a duplicate: the ticker
 * skips its dictionary of recent ids, a quarter of its flow's time, for such runs). set_levels
 * applies a depth update's levels to one side of an order book; kraken_crc and okx_crc are those
 * exchanges' book checksums. The *_frame functions ("book frames", below) take a feed handler's
 * plain book update through its whole path (tests/test_frames.py).
 * tests/test_native.py checks each equals its pure-Python reference on generated input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

static PyObject *s_buy, *s_sell, *zero;

/* One time as the regex takes it: 0 | [1-9][0-9]{0,12} (events.MAX_TS: 13 digits). */
static int scan_int(const char **pp, const char *end, long long *out)
{
    const char *p = *pp;
    if (p >= end || *p < '0' || *p > '9')
        return 0;
    if (*p == '0') {
        *out = 0;
        *pp = p + 1;
        return 1;
    }
    long long v = 0;
    int n = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (++n > 13)
            return 0;
        v = v * 10 + (*p++ - '0');
    }
    *out = v;
    *pp = p;
    return 1;
}

static int expect(const char **pp, const char *end, const char *lit, size_t n)
{
    if ((size_t)(end - *pp) < n || memcmp(*pp, lit, n) != 0)
        return 0;
    *pp += n;
    return 1;
}
#define EXPECT(lit) expect(&p, end, lit, sizeof(lit) - 1)

/* A string of the id alphabet [ !#-\[\]-~]+ (printable ASCII but '"' and '\\'), up to '"'. */
static const char *scan_id(const char *p, const char *end)
{
    const char *s = p;
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c > 0x7e || c == '\\')
            return NULL;
        p++;
    }
    return (p > s && p < end) ? p : NULL;
}

/* [0-9.]+ up to '"'. */
static const char *scan_num(const char *p, const char *end)
{
    const char *s = p;
    while (p < end && ((*p >= '0' && *p <= '9') || *p == '.'))
        p++;
    return (p > s && p < end && *p == '"') ? p : NULL;
}

/* Units of 10**-18 and decimals of a string shaped [0-9]+(\.[0-9]*)? whose value fits 38
 * digits of units (any price or quantity seen): operators.fixed.parse's result for it, without
 * building a str or hashing one. 0 for anything else: the caller asks the Python parser. */
#define SCALE 18
#define MAX_CHARS 100 /* operators.fixed.MAX_CHARS: longer text is refused by parse */
static const unsigned long long POW10[20] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
    1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
    1000000000000000000ULL, 10000000000000000000ULL};

static int fast_units(const char *s, Py_ssize_t n, unsigned __int128 *units, int *dp)
{
    unsigned __int128 v = 0;
    unsigned long long acc = 0; /* the digits not yet in v: 128-bit arithmetic once per 19 */
    int digits = 0, frac = -1, run = 0;
    if (n == 0 || n > MAX_CHARS || s[0] < '0' || s[0] > '9')
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned c = (unsigned)(unsigned char)s[i] - '0';
        if (c <= 9) {
            frac += frac >= 0;
            if (digits == 0 && c == 0)
                continue; /* leading zeros */
            if (++digits > 38)
                return 0;
            acc = acc * 10 + c;
            if (++run == 19) {
                v = v * POW10[19] + acc;
                acc = 0;
                run = 0;
            }
        } else if (s[i] == '.' && frac < 0) {
            frac = 0;
        } else {
            return 0;
        }
    }
    int d = frac < 0 ? 0 : frac;
    if (d > SCALE || digits + SCALE - d > 38)
        return 0;
    v = v != 0 ? v * POW10[run] + acc : acc;
    *units = v <= ULLONG_MAX ? (unsigned __int128)(unsigned long long)v * POW10[SCALE - d]
                             : v * POW10[SCALE - d];
    *dp = d;
    return 1;
}

/* A str of an ASCII span (the scanners checked it: no UTF-8 decoder needed to build it). */
static PyObject *ascii_str(const char *p, Py_ssize_t n)
{
    PyObject *t = PyUnicode_New(n, 127);
    if (t != NULL)
        memcpy(PyUnicode_DATA(t), p, (size_t)n);
    return t;
}

static PyObject *long_of(unsigned __int128 v)
{
    if (v <= (unsigned __int128)ULLONG_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)v);
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    /* 3.11's int is its digits (PyLong_SHIFT bits each, least first): written directly, as
     * the byte-array path does a byte at a time (a price key is past 64 bits from 18.4) */
    int nd = 0;
    for (unsigned __int128 t = v; t != 0; t >>= PyLong_SHIFT)
        nd++;
    PyLongObject *o = _PyLong_New(nd);
    for (int i = 0; o != NULL && i < nd; i++, v >>= PyLong_SHIFT)
        o->ob_digit[i] = (digit)(v & PyLong_MASK);
    return (PyObject *)o;
#elif PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(&v, sizeof(v), Py_ASNATIVEBYTES_NATIVE_ENDIAN);
#else
    return _PyLong_FromByteArray((const unsigned char *)&v, sizeof(v), PY_LITTLE_ENDIAN, 0);
#endif
}

/* memo[text] -> (units, decimals) with units > 0, appended to two lists; 0: not accepted
 * (a ValueError from the parser, or not positive), -1: another error. */
static int units_of(PyObject *memo, PyObject *text, PyObject *u_list, PyObject *dp_list)
{
    PyObject *pair = PyObject_GetItem(memo, text);
    if (pair == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_TypeError, "memo values must be (units, decimals)");
        return -1;
    }
    PyObject *u = PyTuple_GET_ITEM(pair, 0);
    int positive = PyObject_RichCompareBool(u, zero, Py_GT);
    int rc = positive;
    if (positive == 1 && (PyList_Append(u_list, u) < 0 ||
                          PyList_Append(dp_list, PyTuple_GET_ITEM(pair, 1)) < 0))
        rc = -1;
    Py_DECREF(pair);
    return rc;
}

/* units_of, by fast_units where it applies (the same result: tests/test_native.py). */
static int units_into(const char *s, const char *e, PyObject *text, PyObject *memo,
                      PyObject *u_list, PyObject *dp_list)
{
    unsigned __int128 v;
    int dp;
    if (!fast_units(s, e - s, &v, &dp))
        return units_of(memo, text, u_list, dp_list);
    if (v == 0)
        return 0;
    PyObject *u = long_of(v), *d = PyLong_FromLong(dp);
    int rc = (u == NULL || d == NULL || PyList_Append(u_list, u) < 0 ||
              PyList_Append(dp_list, d) < 0) ? -1 : 1;
    Py_XDECREF(u);
    Py_XDECREF(d);
    return rc;
}

static int append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

enum { TS, RTS, IDS, PX, QTY, SIDE, PX_U, PX_DP, QTY_U, QTY_DP, NCOLS };

/* Consecutive trades often repeat a price, a quantity or a time (the same millisecond): the
 * previous row's objects are appended again instead of new equal ones (fewer allocations, and no
 * second parse of the same decimal). */

/* Row ``last``'s text column ``c`` (with its units and decimals columns ``cu``/``cdp``) appended
 * again if its text equals [s, e): 1; else 0, nothing appended; -1 error. */
static int append_same(PyObject **cols, Py_ssize_t last, int c, int cu, int cdp, const char *s,
                       const char *e)
{
    if (last < 0)
        return 0;
    PyObject *prev = PyList_GET_ITEM(cols[c], last);
    if (!PyUnicode_IS_COMPACT_ASCII(prev) || PyUnicode_GET_LENGTH(prev) != e - s ||
        memcmp(PyUnicode_DATA(prev), s, (size_t)(e - s)) != 0)
        return 0;
    if (PyList_Append(cols[c], prev) < 0 ||
        PyList_Append(cols[cu], PyList_GET_ITEM(cols[cu], last)) < 0 ||
        PyList_Append(cols[cdp], PyList_GET_ITEM(cols[cdp], last)) < 0)
        return -1;
    return 1;
}

/* ``v`` appended to an int column: row ``last``'s object if it holds the same value. */
static int append_int(PyObject *list, Py_ssize_t last, long long v)
{
    if (last >= 0) {
        PyObject *prev = PyList_GET_ITEM(list, last);
        int overflow;
        if (PyLong_AsLongLongAndOverflow(prev, &overflow) == v && !overflow)
            return PyList_Append(list, prev);
    }
    return append_new(list, PyLong_FromLongLong(v));
}

/* One value into the columns: 1 appended, 0 not canonical, -1 error. */
static int decode_one(PyObject *value, const char *prefix, Py_ssize_t plen, PyObject *memo,
                      PyObject **cols)
{
    const char *p, *end, *s, *e;
    long long ts, rts;
    Py_ssize_t n;
    if (!PyBytes_Check(value))
        return 0;
    p = PyBytes_AS_STRING(value);
    n = PyBytes_GET_SIZE(value);
    end = p + n;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        end--;
    if (end - p < plen || memcmp(p, prefix, (size_t)plen) != 0)
        return 0;
    p += plen;
    if (!scan_int(&p, end, &ts) || !EXPECT(",\"rts\":") || !scan_int(&p, end, &rts) ||
        !EXPECT(",\"id\":\""))
        return 0;
    if ((e = scan_id(p, end)) == NULL)
        return 0;
    s = p;
    p = e + 1;
    if (!EXPECT(",\"px\":\""))
        return 0;
    const char *px = p, *px_end = scan_num(p, end);
    if (px_end == NULL)
        return 0;
    p = px_end + 1;
    if (!EXPECT(",\"qty\":\""))
        return 0;
    const char *qty = p, *qty_end = scan_num(p, end);
    if (qty_end == NULL)
        return 0;
    p = qty_end + 1;
    PyObject *side;
    if (EXPECT(",\"side\":\"buy\"}"))
        side = s_buy;
    else if (EXPECT(",\"side\":\"sell\"}"))
        side = s_sell;
    else
        return 0;
    if (p != end)
        return 0;
    Py_ssize_t last = PyList_GET_SIZE(cols[TS]) - 1; /* the previous row, if any */
    int same_px = append_same(cols, last, PX, PX_U, PX_DP, px, px_end);
    if (same_px < 0)
        return -1;
    if (same_px == 0) {
        PyObject *px_s = ascii_str(px, px_end - px);
        if (px_s == NULL)
            return -1;
        int rc = units_into(px, px_end, px_s, memo, cols[PX_U], cols[PX_DP]);
        if (rc == 1 && PyList_Append(cols[PX], px_s) < 0)
            rc = -1;
        Py_DECREF(px_s);
        if (rc != 1)
            return rc;
    }
    int same_qty = append_same(cols, last, QTY, QTY_U, QTY_DP, qty, qty_end);
    if (same_qty < 0)
        return -1;
    if (same_qty == 0) {
        PyObject *qty_s = ascii_str(qty, qty_end - qty);
        if (qty_s == NULL)
            return -1;
        int rc = units_into(qty, qty_end, qty_s, memo, cols[QTY_U], cols[QTY_DP]);
        if (rc == 1 && PyList_Append(cols[QTY], qty_s) < 0)
            rc = -1;
        Py_DECREF(qty_s);
        if (rc != 1)
            return rc;
    }
    if (append_int(cols[TS], last, ts) < 0 || append_int(cols[RTS], last, rts) < 0 ||
        append_new(cols[IDS], ascii_str(s, e - s)) < 0 ||
        PyList_Append(cols[SIDE], side) < 0)
        return -1;
    return 1;
}

PyDoc_STRVAR(decode_trades_doc,
"decode_trades(values, prefix, memo) -> tuple of 10 lists | None\n\n"
"Columns (ts, rts, ids, px, qty, side, px_u, px_dp, qty_u, qty_dp) of canonical trades, each\n"
"value starting with ``prefix`` (the trade's fields up to and including '\"ts\":'); None if any\n"
"value is not one (or there are none). ``memo[text]`` gives a decimal string's (units, decimals).");

static PyObject *decode_trades(PyObject *self, PyObject *args)
{
    PyObject *values, *memo, *cols[NCOLS] = {NULL};
    const char *prefix;
    Py_ssize_t plen;
    if (!PyArg_ParseTuple(args, "O!y#O:decode_trades", &PyList_Type, &values, &prefix, &plen,
                          &memo))
        return NULL;
    if (PyList_GET_SIZE(values) == 0)  /* as the Python path: no batch */
        Py_RETURN_NONE;
    /* A tuple of the values, holding a reference to each: the memo's parser is Python code and
     * could change the list while we point into its bytes. */
    PyObject *items = PySequence_Tuple(values), *result = NULL;
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    for (int c = 0; c < NCOLS; c++)
        if ((cols[c] = PyList_New(0)) == NULL)
            goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int rc = decode_one(PyTuple_GET_ITEM(items, i), prefix, plen, memo, cols);
        if (rc < 0)
            goto done;
        if (rc == 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    result = PyTuple_New(NCOLS);
    if (result == NULL)
        goto done;
    for (int c = 0; c < NCOLS; c++) {
        PyTuple_SET_ITEM(result, c, cols[c]);
        cols[c] = NULL;
    }
done:
    for (int c = 0; c < NCOLS; c++)
        Py_XDECREF(cols[c]);
    Py_DECREF(items);
    return result;
}

/* memo[key], or NULL with no exception set when the memo refuses it (KeyError, TypeError,
 * ValueError: the Python path's "not plainly valid"); NULL with an exception on anything else. */
static PyObject *lookup(PyObject *memo, PyObject *key)
{
    PyObject *v = PyObject_GetItem(memo, key);
    if (v == NULL && (PyErr_ExceptionMatches(PyExc_KeyError) ||
                      PyErr_ExceptionMatches(PyExc_TypeError) ||
                      PyErr_ExceptionMatches(PyExc_ValueError)))
        PyErr_Clear();
    return v;
}

/* Units of a level's price (least 1) or quantity (least 0): by fast_units for a plain str,
 * else memo[text]; NULL without an exception when refused (see lookup). */
static PyObject *level_units(PyObject *memo, PyObject *text, int least)
{
    if (PyUnicode_CheckExact(text) && PyUnicode_IS_COMPACT_ASCII(text)) {
        unsigned __int128 v;
        int dp;
        if (fast_units((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), &v, &dp))
            return v < (unsigned)least ? NULL : long_of(v);
    }
    return lookup(memo, text);
}

PyDoc_STRVAR(book_levels_doc,
"book_levels(px_memo, qty_memo, raw) -> list of (px units, px, qty units, qty) | None\n\n"
"operators.events.book_levels: None unless ``raw`` is a list of two-element lists whose\n"
"strings both memos accept.");

static PyObject *book_levels(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "book_levels takes (px_memo, qty_memo, raw)");
        return NULL;
    }
    PyObject *pxs = args[0], *qtys = args[1], *raw = args[2];
    if (!PyList_CheckExact(raw))
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(raw); i++) {
        PyObject *lv = PyList_GET_ITEM(raw, i);
        if (!PyList_CheckExact(lv) || PyList_GET_SIZE(lv) != 2)
            Py_RETURN_NONE;
    }
    /* The memos' parsers are Python code and could change ``raw`` or its levels: read a tuple
     * of them (holding references), re-check each level as it comes, hold its two strings, and
     * append to ``out`` (never half-built, should the garbage collector show it to them). */
    PyObject *levels = PySequence_Tuple(raw), *out = PyList_New(0);
    if (levels == NULL || out == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(levels); i++) {
        PyObject *lv = PyTuple_GET_ITEM(levels, i);
        if (!PyList_CheckExact(lv) || PyList_GET_SIZE(lv) != 2)
            goto refuse;
        PyObject *px = Py_NewRef(PyList_GET_ITEM(lv, 0)), *qty = Py_NewRef(PyList_GET_ITEM(lv, 1));
        PyObject *pu = level_units(pxs, px, 1);
        PyObject *qu = pu == NULL ? NULL : level_units(qtys, qty, 0);
        PyObject *level = qu == NULL ? NULL : PyTuple_Pack(4, pu, px, qu, qty);
        Py_DECREF(px);
        Py_DECREF(qty);
        Py_XDECREF(pu);
        Py_XDECREF(qu);
        if (level == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto refuse;
        }
        int rc = PyList_Append(out, level);
        Py_DECREF(level);
        if (rc < 0)
            goto error;
    }
    Py_DECREF(levels);
    return out;
refuse:
    Py_DECREF(levels);
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_XDECREF(levels);
    Py_XDECREF(out);
    return NULL;
}

/* operators.fixed.fmt for its common case, where records spend their time: units >= 0,
 * 0 < dp <= scale <= 36, units a multiple of 10**(scale - dp). The digits of units are printed
 * once (no big-integer division); anything else goes to the Python fmt, which raises the errors. */
static PyObject *fmt_fallback, *fmt_big;

static PyObject *fmt(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    long dp, scale = 18;
    int overflow = 0;
    if (kwnames != NULL || nargs < 2 || nargs > 3 || !PyLong_CheckExact(args[0])
        || !PyLong_CheckExact(args[1])
        || (nargs == 3 && !PyLong_CheckExact(args[2])))
        goto fallback;
    dp = PyLong_AsLongAndOverflow(args[1], &overflow);
    if (overflow)
        goto fallback;
    if (nargs == 3) {
        scale = PyLong_AsLongAndOverflow(args[2], &overflow);
        if (overflow)
            goto fallback;
    }
    if (PyErr_Occurred())
        return NULL;
    if (dp <= 0 || dp > scale || scale > 36)
        goto fallback;
    int big = PyObject_RichCompareBool(args[0], fmt_big, Py_GE);
    if (big < 0)
        return NULL;
    if (big) /* str() has a digit limit; the Python fmt divides first */
        goto fallback;
    int sign = PyObject_RichCompareBool(args[0], zero, Py_GT);
    if (sign < 0)
        return NULL;
    PyObject *str;
    if (sign == 0) {
        int eq = PyObject_RichCompareBool(args[0], zero, Py_EQ);
        if (eq <= 0) /* negative (or an error): the Python fmt */
            goto fallback;
        str = PyUnicode_FromString("0");
    } else {
        str = PyObject_Str(args[0]);
    }
    if (str == NULL)
        return NULL;
    Py_ssize_t n;
    const char *d = PyUnicode_AsUTF8AndSize(str, &n);
    if (d == NULL) {
        Py_DECREF(str);
        return NULL;
    }
    Py_ssize_t cut = sign ? scale - dp : 0, m = n - cut;
    if (m <= 0) {
        Py_DECREF(str);
        goto fallback; /* 0 < units < 10**cut: not a multiple, the Python fmt raises */
    }
    for (Py_ssize_t i = m; i < n; i++) {
        if (d[i] != '0') {
            Py_DECREF(str);
            goto fallback;
        }
    }
    Py_ssize_t ip = m > dp ? m - dp : 0; /* digits before the point; none: "0." */
    Py_ssize_t len = (ip ? ip : 1) + 1 + dp;
    PyObject *out = PyUnicode_New(len, 127);
    if (out == NULL) {
        Py_DECREF(str);
        return NULL;
    }
    char *o = (char *)PyUnicode_1BYTE_DATA(out);
    if (ip) {
        memcpy(o, d, ip);
        o += ip;
    } else {
        *o++ = '0';
    }
    *o++ = '.';
    Py_ssize_t pad = dp - (m - ip);
    memset(o, '0', pad);
    memcpy(o + pad, d + ip, m - ip);
    Py_DECREF(str);
    return out;
fallback:
    if (fmt_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "operators._native.fmt: no fallback set");
        return NULL;
    }
    return PyObject_Vectorcall(fmt_fallback, args, nargs, kwnames);
}

static PyObject *set_fmt_fallback(PyObject *self, PyObject *f)
{
    Py_XSETREF(fmt_fallback, Py_NewRef(f));
    Py_RETURN_NONE;
}

/* scan_ids(ids, start, stop, floor) -> (fresh, top): the ticker's duplicate check for a run of
 * trade ids (operators/ticker.py: _scan_ids_py is the reference). An id is "numeric" when it is
 * the canonical decimal of an integer below 2**63 (ASCII digits, no leading zero but "0"). fresh:
 * every id of ids[start:stop] is numeric, each greater than the one before, the first greater
 * than floor; top: the greatest of floor and every numeric id of the range. */
/* The loop of scan_ids over ids[start:stop] (clamped); -1 on an error. */
static int scan_ids_core(PyObject *ids, Py_ssize_t start, Py_ssize_t stop, long long floor,
                         int *fresh_out, long long *top_out)
{
    if (start < 0)
        start = 0;
    if (stop > PyList_GET_SIZE(ids))
        stop = PyList_GET_SIZE(ids);
    int fresh = 1;
    long long top = floor, prev = floor;
    for (Py_ssize_t i = start; i < stop; i++) {
        PyObject *s = PyList_GET_ITEM(ids, i);
        if (PyUnicode_CheckExact(s) && PyUnicode_READY(s) < 0)
            return -1;
        if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_ASCII(s)) {
            fresh = 0;
            continue;
        }
        Py_ssize_t len = PyUnicode_GET_LENGTH(s);
        const char *d = (const char *)PyUnicode_DATA(s);
        if (len == 0 || len > 19 || (d[0] == '0' && len > 1)) {
            fresh = 0;
            continue;
        }
        long long n = 0;
        Py_ssize_t k = 0;
        for (; k < len && d[k] >= '0' && d[k] <= '9'; k++) {
            if (n > (LLONG_MAX - (d[k] - '0')) / 10)
                break; /* 2**63 or more: not numeric (Bybit's ids have 19 digits) */
            n = n * 10 + (d[k] - '0');
        }
        if (k < len) {
            fresh = 0;
            continue;
        }
        if (n > top)
            top = n;
        if (n <= prev)
            fresh = 0;
        prev = n;
    }
    *fresh_out = fresh;
    *top_out = top;
    return 0;
}

static PyObject *scan_ids(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan_ids(ids: list, start, stop, floor)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t stop = PyLong_AsSsize_t(args[2]);
    if (stop == -1 && PyErr_Occurred())
        return NULL;
    long long floor = PyLong_AsLongLong(args[3]);
    if (floor == -1 && PyErr_Occurred())
        return NULL;
    int fresh;
    long long top;
    if (scan_ids_core(args[0], start, stop, floor, &fresh, &top) < 0)
        return NULL;
    return Py_BuildValue("(OL)", fresh ? Py_True : Py_False, top);
}

/* set_levels(levels, head, edge, bid, changes): the hot loop of every depth update,
 * operators.orderbook._Side.set (_set_levels_py there is the reference). levels: price units ->
 * (px, qty); head: ascending list of the keys on the good side of edge ((key <= edge) != bid);
 * changes: (key, px, qty units, qty) tuples. A quantity of zero removes the level. Was a quarter
 * of normalizing a Binance depth stream in Python. Keys must be exact ints (book_levels' are):
 * comparing them then runs no Python code, so the lists cannot change under the loop. */
static int in_head(PyObject *key, PyObject *edge, int bid)
{
    int le = PyObject_RichCompareBool(key, edge, Py_LE);
    return le < 0 ? -1 : le != bid;
}

/* bisect.bisect_right (right) or bisect_left of key in the ascending list a; -1 on error. */
static Py_ssize_t bisect_key(PyObject *a, PyObject *key, int right)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(a);
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        PyObject *item = Py_NewRef(PyList_GET_ITEM(a, mid));
        int lt = right ? PyObject_RichCompareBool(key, item, Py_LT)
                       : PyObject_RichCompareBool(item, key, Py_LT);
        Py_DECREF(item);
        if (lt < 0)
            return -1;
        if (hi > PyList_GET_SIZE(a)) { /* a comparison changed the list: only odd int types can */
            PyErr_SetString(PyExc_RuntimeError, "set_levels: the head changed during a bisect");
            return -1;
        }
        if (right ? lt : !lt)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* One level of a side: key (an exact int) set to (px, qty), or removed where qty is zero. */
static int set_one(PyObject *d, PyObject *head, PyObject *edge, int bid, PyObject *key,
                   int nonzero, PyObject *px, PyObject *qty)
{
    int has = PyDict_Contains(d, key);
    if (has < 0)
        return -1;
    if (!nonzero && !has)
        return 0;
    int in = (nonzero && has) ? 0 : in_head(key, edge, bid);
    if (in < 0)
        return -1;
    if (!nonzero) {
        if (PyDict_DelItem(d, key) < 0)
            return -1;
        if (in) {
            Py_ssize_t i = bisect_key(head, key, 0);
            if (i < 0 || PySequence_DelItem(head, i) < 0)
                return -1;
        }
        return 0;
    }
    if (in) {
        Py_ssize_t i = bisect_key(head, key, 1);
        if (i < 0 || PyList_Insert(head, i, key) < 0)
            return -1;
    }
    PyObject *v = PyTuple_Pack(2, px, qty);
    if (v == NULL)
        return -1;
    int r = PyDict_SetItem(d, key, v);
    Py_DECREF(v);
    return r;
}

static int set_level(PyObject *d, PyObject *head, PyObject *edge, int bid, PyObject *lv)
{
    if (!PyTuple_CheckExact(lv) || PyTuple_GET_SIZE(lv) != 4 ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(lv, 0))) {
        PyErr_SetString(PyExc_TypeError, "a level is a (int key, px, qty units, qty) tuple");
        return -1;
    }
    int nonzero = PyObject_IsTrue(PyTuple_GET_ITEM(lv, 2));
    if (nonzero < 0)
        return -1;
    return set_one(d, head, edge, bid, PyTuple_GET_ITEM(lv, 0), nonzero, PyTuple_GET_ITEM(lv, 1),
                   PyTuple_GET_ITEM(lv, 3));
}

static PyObject *set_levels(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        !PyLong_CheckExact(args[2]) || !PyList_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "set_levels(levels: dict, head: list, edge: int, bid, changes: list)");
        return NULL;
    }
    if (!PyBool_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "set_levels: bid must be a bool");
        return NULL;
    }
    int bid = args[3] == Py_True;
    PyObject *changes = args[4];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(changes); i++) {
        PyObject *lv = Py_NewRef(PyList_GET_ITEM(changes, i));
        int r = set_level(args[0], args[1], args[2], bid, lv);
        Py_DECREF(lv);
        if (r < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* side_top(levels, head, n, bid): the values of the best n keys of head, best first (bids:
 * its last n, asks: its first n), operators.orderbook._Side.top (_side_top_py is the
 * reference): every book record and checksum reads the top of a book. */
static PyObject *side_top(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        !PyBool_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "side_top(levels: dict, head: list, n: int, bid: bool)");
        return NULL;
    }
    PyObject *d = args[0], *head = args[1];
    int bid = args[3] == Py_True;
    Py_ssize_t n = PyLong_AsSsize_t(args[2]), size = PyList_GET_SIZE(head);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    n = n < 0 ? 0 : (n > size ? size : n);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = Py_NewRef(PyList_GET_ITEM(head, bid ? size - 1 - i : i));
        PyObject *v = PyDict_GetItemWithError(d, key); /* borrowed */
        if (v == NULL && !PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, key);
        Py_DECREF(key);
        if (v != NULL && PyList_GET_SIZE(head) != size) { /* only odd key types can do that */
            v = NULL;
            PyErr_SetString(PyExc_RuntimeError, "side_top: the head changed during a lookup");
        }
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, Py_NewRef(v));
    }
    return out;
}

PyDoc_STRVAR(side_top_doc, "side_top(levels, head, n, bid) -> list: see "
                           "operators/orderbook.py (_side_top_py).");

PyDoc_STRVAR(set_levels_doc, "set_levels(levels, head, edge, bid, changes) -> None: see "
                             "operators/orderbook.py (_set_levels_py).");

/* Book checksums of Kraken and OKX, verified after every update of those feeds: the join of
 * 20 or 50 strings and a CRC32 were most of a Kraken frame's time in Python. The CRC runs over
 * the strings as they are read (no text is built). The references are the Python functions in
 * connectors/exchanges (kraken_checksum_py, okx_checksum_py); anything not plainly a list of
 * (px, qty) pairs of ASCII strings returns None and the caller takes them. */
static uint32_t crc_table[256], crc_slices[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
        crc_slices[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_slices[t][i] = (crc_slices[t - 1][i] >> 8) ^ crc_table[crc_slices[t - 1][i] & 0xff];
}

/* The CRC32 (running value, not inverted) of n bytes, eight at a time (slicing-by-8). */
static uint32_t crc_bytes(uint32_t crc, const unsigned char *p, size_t n)
{
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        crc = crc_slices[7][lo & 0xff] ^ crc_slices[6][(lo >> 8) & 0xff] ^
              crc_slices[5][(lo >> 16) & 0xff] ^ crc_slices[4][lo >> 24] ^
              crc_slices[3][hi & 0xff] ^ crc_slices[2][(hi >> 8) & 0xff] ^
              crc_slices[1][(hi >> 16) & 0xff] ^ crc_slices[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

static inline uint32_t crc_byte(uint32_t crc, unsigned char b)
{
    return crc_table[(crc ^ b) & 0xff] ^ (crc >> 8);
}

/* Level i of the list or tuple seq as two ASCII strings; 0 if it is not such a level. */
static int level_pair(PyObject *seq, Py_ssize_t i, PyObject **px, PyObject **qty)
{
    PyObject *lv = PySequence_Fast_GET_ITEM(seq, i);
    if (PyTuple_CheckExact(lv) && PyTuple_GET_SIZE(lv) == 2) {
        *px = PyTuple_GET_ITEM(lv, 0);
        *qty = PyTuple_GET_ITEM(lv, 1);
    } else if (PyList_CheckExact(lv) && PyList_GET_SIZE(lv) == 2) {
        *px = PyList_GET_ITEM(lv, 0);
        *qty = PyList_GET_ITEM(lv, 1);
    } else {
        return 0;
    }
    return PyUnicode_CheckExact(*px) && PyUnicode_IS_COMPACT_ASCII(*px) &&
           PyUnicode_CheckExact(*qty) && PyUnicode_IS_COMPACT_ASCII(*qty);
}

static int is_levels(PyObject *seq)
{
    return PyList_CheckExact(seq) || PyTuple_CheckExact(seq);
}

/* Kraken's fragment of a decimal: its digits without the point, leading zeros dropped. */
static uint32_t crc_digits(uint32_t crc, PyObject *text)
{
    const char *d = (const char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int lead = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (d[i] == '.' || (lead && d[i] == '0'))
            continue;
        lead = 0;
        crc = crc_byte(crc, (unsigned char)d[i]);
    }
    return crc;
}

static uint32_t crc_text(uint32_t crc, PyObject *text)
{
    const char *d = (const char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    for (Py_ssize_t i = 0; i < n; i++)
        crc = crc_byte(crc, (unsigned char)d[i]);
    return crc;
}

/* kraken_crc(asks, bids): unsigned CRC32 of the top 10 asks then the top 10 bids. */
static PyObject *kraken_crc(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "kraken_crc(asks, bids)");
        return NULL;
    }
    if (Py_TYPE(args[0]) != Py_TYPE(args[1]))
        Py_RETURN_NONE; /* a list and a tuple: the reference's asks[:10] + bids[:10] raises */
    uint32_t crc = 0xFFFFFFFFu;
    for (int side = 0; side < 2; side++) {
        PyObject *seq = args[side], *px, *qty;
        if (!is_levels(seq))
            Py_RETURN_NONE;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        for (Py_ssize_t i = 0; i < n && i < 10; i++) {
            if (!level_pair(seq, i, &px, &qty))
                Py_RETURN_NONE;
            crc = crc_digits(crc_digits(crc, px), qty);
        }
    }
    return PyLong_FromUnsignedLong(crc ^ 0xFFFFFFFFu);
}

/* okx_crc(bids, asks): signed CRC32 of the top 25 bids and asks interleaved, ':'-joined. */
static PyObject *okx_crc(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "okx_crc(bids, asks)");
        return NULL;
    }
    if (!is_levels(args[0]) || !is_levels(args[1]))
        Py_RETURN_NONE;
    uint32_t crc = 0xFFFFFFFFu;
    int first = 1;
    for (Py_ssize_t i = 0; i < 25; i++) {
        for (int side = 0; side < 2; side++) {
            PyObject *seq = args[side], *px, *qty;
            if (i >= PySequence_Fast_GET_SIZE(seq))
                continue;
            if (!level_pair(seq, i, &px, &qty))
                Py_RETURN_NONE;
            if (!first)
                crc = crc_byte(crc, ':');
            crc = crc_byte(crc_text(crc, px), ':');
            crc = crc_text(crc, qty);
            first = 0;
        }
    }
    crc ^= 0xFFFFFFFFu;
    return PyLong_FromLongLong(crc & 0x80000000u ? (long long)crc - 0x100000000LL
                                                 : (long long)crc);
}

PyDoc_STRVAR(kraken_crc_doc, "kraken_crc(asks, bids) -> int | None: see "
                             "connectors/exchanges/kraken.py (kraken_checksum).");
PyDoc_STRVAR(okx_crc_doc, "okx_crc(bids, asks) -> int | None: see "
                          "connectors/exchanges/okx.py (okx_checksum).");

/* -- ticker_runs: the ticker's common case ---------------------------------------------------
 * operators/ticker.py, TickerState.on_trades: a run of trades in time order into the bucket of
 * the newest minute, with rising numeric ids (no duplicate possible), folded into the bucket, the
 * window and the recent-ids queue. That Python cost ~8 us a run and ~0.3 us a trade (slices,
 * C-level max/min/sum, the queue's pruning loop): the run ends at each record due (once a second
 * of event time), so a third of the ticker flow's time. This is the same code, statement for
 * statement; anything else (another minute, an id that needs the dictionary, a record due) is
 * left to the Python loop, which also remains the reference (the pure-Python build runs it).
 * tests/test_ticker.py compares on_trades with on_trade one by one, records, stats and state. */
static PyObject *n_clock, *n_open_t, *n_next, *n_b, *n_hi, *n_lo, *n_top_id, *n_idq, *n_sids,
    *n_rising, *n_params, *n_dedup_ms, *n_stats, *n_last, *n_vdp, *n_qdp, *n_wh, *n_wh_m, *n_wl,
    *n_wl_m, *n_v, *n_q, *n_n, *n_dirty, *n_trades, *n_popleft, *n_extend, *n_ts, *n_ids, *n_px,
    *n_px_u, *n_px_dp, *n_qty_u, *n_qty_dp;

enum { B_M, B_O_TS, B_O, B_O_U, B_O_DP, B_O_ID, B_H, B_H_TS, B_L, B_L_TS, B_V, B_V_DP, B_Q, B_Q_DP,
       B_N, B_SIZE };
#define T_MINUTE 60000LL
#define T_BUCKETS 1440LL
#define T_SPAN ((T_BUCKETS - 1) * T_MINUTE)

static int intern_names(void)
{
    struct { PyObject **slot; const char *name; } names[] = {
        {&n_clock, "_clock"}, {&n_open_t, "_open_t"}, {&n_next, "_next"}, {&n_b, "_b"},
        {&n_hi, "_hi"}, {&n_lo, "_lo"}, {&n_top_id, "_top_id"}, {&n_idq, "_idq"},
        {&n_sids, "_ids"}, {&n_rising, "_rising"}, {&n_params, "params"},
        {&n_dedup_ms, "dedup_ms"}, {&n_stats, "stats"}, {&n_last, "_last"}, {&n_vdp, "_vdp"},
        {&n_qdp, "_qdp"}, {&n_wh, "_wh"}, {&n_wh_m, "_wh_m"}, {&n_wl, "_wl"},
        {&n_wl_m, "_wl_m"}, {&n_v, "_v"}, {&n_q, "_q"}, {&n_n, "_n"}, {&n_dirty, "_dirty"},
        {&n_trades, "trades"}, {&n_popleft, "popleft"}, {&n_extend, "extend"}, {&n_ts, "ts"},
        {&n_ids, "ids"}, {&n_px, "px"}, {&n_px_u, "px_u"}, {&n_px_dp, "px_dp"},
        {&n_qty_u, "qty_u"}, {&n_qty_dp, "qty_dp"},
    };
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
        if ((*names[k].slot = PyUnicode_InternFromString(names[k].name)) == NULL)
            return -1;
    return 0;
}

/* obj.name as a C long long; -1 with an exception on failure (check PyErr_Occurred). */
static long long attr_ll(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    long long out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return out;
}

/* obj.name as a C long long, an int above LLONG_MAX read as LLONG_MAX: for the throttles' next
 * times, which a huge emit interval (never emit) pushes past it, and which the runs only compare
 * with times. -1 with an exception on failure (check PyErr_Occurred). */
static long long attr_ll_capped(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int overflow;
    long long out = PyLong_AsLongLongAndOverflow(v, &overflow);
    Py_DECREF(v);
    if (overflow > 0)
        return LLONG_MAX;
    if (overflow < 0) {
        PyErr_SetString(PyExc_OverflowError, "a time below -2**63");
        return -1;
    }
    return out;
}

/* Settings the runs add to times (dedup_ms, lateness_ms) stay below this; larger ones leave
 * every trade to the Python loop, whose ints cannot overflow. */
#define T_MAX_SPAN (1LL << 61)

static int set_attr_new(PyObject *obj, PyObject *name, PyObject *value)
{
    if (value == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, value);
    Py_DECREF(value);
    return rc;
}

/* obj.name += delta (Python ints); delta borrowed. */
static int add_attr(PyObject *obj, PyObject *name, PyObject *delta)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    PyObject *sum = PyNumber_Add(v, delta);
    Py_DECREF(v);
    return set_attr_new(obj, name, sum);
}

/* list[k] += delta; delta borrowed. */
static int add_item(PyObject *list, Py_ssize_t k, PyObject *delta)
{
    PyObject *sum = PyNumber_Add(PyList_GET_ITEM(list, k), delta);
    return sum == NULL ? -1 : PyList_SetItem(list, k, sum);
}

/* counts[k] += delta, counts a list of ints, k checked against its length. */
static int bump(PyObject *counts, long long k, long delta)
{
    if (k < 0 || k >= PyList_GET_SIZE(counts)) {
        PyErr_SetString(PyExc_IndexError, "decimals out of range");
        return -1;
    }
    PyObject *d = PyLong_FromLong(delta);
    if (d == NULL)
        return -1;
    int rc = add_item(counts, (Py_ssize_t)k, d);
    Py_DECREF(d);
    return rc;
}

/* _prune: forget the ids accepted with a ts before horizon, in arrival order. Counts them
 * first (a pass of the deque's iterator), then pops that many with the bound popleft methods:
 * half the cost of asking the deque's length and head before every pop. */
static int prune_ids(PyObject *qts, PyObject *qid, PyObject *ids, long long horizon)
{
    PyObject *it = PyObject_GetIter(qts), *x;
    if (it == NULL)
        return -1;
    Py_ssize_t count = 0;
    while ((x = PyIter_Next(it)) != NULL) {
        long long f = PyLong_AsLongLong(x);
        Py_DECREF(x);
        if (f == -1 && PyErr_Occurred())
            break;
        if (f >= horizon)
            break;
        count++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    if (count == 0)
        return 0;
    PyObject *pop_ts = PyObject_GetAttr(qts, n_popleft);
    PyObject *pop_id = pop_ts ? PyObject_GetAttr(qid, n_popleft) : NULL;
    int rc = pop_id == NULL ? -1 : 0;
    for (Py_ssize_t k = 0; rc == 0 && k < count; k++) {
        PyObject *old_ts = PyObject_CallNoArgs(pop_ts);
        PyObject *old_id = old_ts ? PyObject_CallNoArgs(pop_id) : NULL;
        if (old_id == NULL) {
            rc = -1;
        } else if (ids != Py_None) {
            PyObject *got = PyDict_GetItemWithError(ids, old_id);
            if (got == NULL) {
                rc = PyErr_Occurred() ? -1 : 0;
            } else {
                int eq = PyObject_RichCompareBool(got, old_ts, Py_EQ);
                rc = eq < 0 ? -1 : (eq ? PyDict_DelItem(ids, old_id) : 0);
            }
        }
        Py_XDECREF(old_ts);
        Py_XDECREF(old_id);
    }
    Py_XDECREF(pop_ts);
    Py_XDECREF(pop_id);
    return rc;
}

/* The end of the run from i (TickerState and CandleState.on_trades): trades in time order,
 * before bound, up to and including the first at which output is due (ts >= next). */
static Py_ssize_t run_end(PyObject *ts, Py_ssize_t i, long long t0, long long bound, long long next)
{
    Py_ssize_t n = PyList_GET_SIZE(ts), j = i + 1;
    if (t0 >= next)
        return j;
    long long prev = t0;
    for (; j < n; j++) {
        long long t = PyLong_AsLongLong(PyList_GET_ITEM(ts, j));
        if (t == -1 && PyErr_Occurred())
            return -1;
        if (t < prev || t >= bound)
            break;
        prev = t;
        if (t >= next)
            return j + 1;
    }
    return j;
}

/* The columns a run reads, from a TradeBatch: ts, ids, px, px_u, px_dp, qty_u, qty_dp (new
 * references; col must hold 7 NULLs). */
static int get_columns(PyObject *batch, PyObject **col)
{
    PyObject *names[7] = {n_ts, n_ids, n_px, n_px_u, n_px_dp, n_qty_u, n_qty_dp};
    for (int c = 0; c < 7; c++) {
        if ((col[c] = PyObject_GetAttr(batch, names[c])) == NULL)
            return -1;
        if (!PyList_CheckExact(col[c]) || PyList_GET_SIZE(col[c]) != PyList_GET_SIZE(col[0])) {
            PyErr_SetString(PyExc_TypeError, "a TradeBatch's columns must be lists of one length");
            return -1;
        }
    }
    return 0;
}

/* The columns of rows [i, j) (col: ts, ids, px, px_u, px_dp, qty_u, qty_dp) folded as the
 * operators' runs do with C-level max/min/sum: the first highest and lowest price units and their
 * rows, the sums of quantity units and of price x quantity units (new references), the most
 * quantity decimals and price + quantity decimals. */
struct run_fold {
    PyObject *top, *low, *v, *q;
    Py_ssize_t top_k, low_k;
    long vmax, qmax;
};

static int fold_columns(PyObject **col, Py_ssize_t i, Py_ssize_t j, struct run_fold *f)
{
    PyObject *pu = col[3], *pdp = col[4], *qu = col[5], *qdp = col[6];
    f->top = f->low = PyList_GET_ITEM(pu, i);
    f->top_k = f->low_k = i;
    f->vmax = PyLong_AsLong(PyList_GET_ITEM(qdp, i));
    f->qmax = f->vmax + PyLong_AsLong(PyList_GET_ITEM(pdp, i));
    if (PyErr_Occurred())
        return -1;
    f->v = Py_NewRef(PyList_GET_ITEM(qu, i));
    if ((f->q = PyNumber_Multiply(f->top, f->v)) == NULL)
        goto fail;
    for (Py_ssize_t x = i + 1; x < j; x++) {
        PyObject *p = PyList_GET_ITEM(pu, x), *u = PyList_GET_ITEM(qu, x);
        if (p != f->top && p != f->low) {  /* the same object: the same value, no change */
            int gt = PyObject_RichCompareBool(p, f->top, Py_GT);
            if (gt < 0)
                goto fail;
            if (gt) {
                f->top = p;
                f->top_k = x;
            } else {
                int lt = PyObject_RichCompareBool(p, f->low, Py_LT);
                if (lt < 0)
                    goto fail;
                if (lt) {
                    f->low = p;
                    f->low_k = x;
                }
            }
        }
        PyObject *nv = PyNumber_Add(f->v, u);
        Py_SETREF(f->v, nv);
        if (f->v == NULL)
            goto fail;
        PyObject *pq = PyNumber_Multiply(p, u);
        if (pq == NULL)
            goto fail;
        PyObject *nq = PyNumber_Add(f->q, pq);
        Py_DECREF(pq);
        Py_SETREF(f->q, nq);
        if (f->q == NULL)
            goto fail;
        long vd = PyLong_AsLong(PyList_GET_ITEM(qdp, x));
        long qd = vd + PyLong_AsLong(PyList_GET_ITEM(pdp, x));
        if (PyErr_Occurred())
            goto fail;
        if (vd > f->vmax)
            f->vmax = vd;
        if (qd > f->qmax)
            f->qmax = qd;
    }
    return 0;
fail:
    Py_CLEAR(f->v);
    Py_CLEAR(f->q);
    return -1;
}

/* Fold the fresh run [i, j) of minute m0 (slot, bucket) into the state: the body of the Python
 * loop. Returns 0, or -1 with an exception. */
static int fold_run(PyObject *st, PyObject **col, Py_ssize_t i, Py_ssize_t j, long long m0,
                    Py_ssize_t slot, PyObject *bucket, long long clock, long long top_id,
                    long long dedup)
{
    PyObject *ts = col[0], *tids = col[1], *px = col[2], *pu = col[3], *pdp = col[4];
    PyObject *idq = NULL, *ids = NULL, *run_ts = NULL, *run_ids = NULL, *r = NULL, *v = NULL,
             *q = NULL, *cnt = NULL, *stats = NULL, *hi = NULL, *lo = NULL, *w = NULL;
    int rc = -1;
    Py_ssize_t k = j - 1;
    /* self._prune((ts[k - 1] if k > i else clock) - dedup_ms) */
    long long h0 = k > i ? PyLong_AsLongLong(PyList_GET_ITEM(ts, k - 1)) : clock;
    if (h0 == -1 && PyErr_Occurred())
        return -1;
    if ((idq = PyObject_GetAttr(st, n_idq)) == NULL || (ids = PyObject_GetAttr(st, n_sids)) == NULL)
        goto done;
    if (!PyTuple_Check(idq) || PyTuple_GET_SIZE(idq) != 2 || (ids != Py_None && !PyDict_Check(ids))) {
        PyErr_SetString(PyExc_TypeError, "ticker state: unexpected _idq or _ids");
        goto done;
    }
    PyObject *qts = PyTuple_GET_ITEM(idq, 0), *qid = PyTuple_GET_ITEM(idq, 1);
    /* self._remember(ts[i:j], run_ids, True, top) */
    if ((run_ts = PyList_GetSlice(ts, i, j)) == NULL || (run_ids = PyList_GetSlice(tids, i, j)) == NULL)
        goto done;
    if ((r = PyObject_CallMethodOneArg(qts, n_extend, run_ts)) == NULL)
        goto done;
    Py_CLEAR(r);
    if ((r = PyObject_CallMethodOneArg(qid, n_extend, run_ids)) == NULL)
        goto done;
    Py_CLEAR(r);
    if (set_attr_new(st, n_top_id, PyLong_FromLongLong(top_id)) < 0)
        goto done;
    if (ids != Py_None) {
        for (Py_ssize_t x = 0; x < j - i; x++)
            if (PyDict_SetItem(ids, PyList_GET_ITEM(run_ids, x), PyList_GET_ITEM(run_ts, x)) < 0)
                goto done;
        long long rising = attr_ll(st, n_rising);
        if (rising == -1 && PyErr_Occurred())
            goto done;
        rising += j - i;
        if (set_attr_new(st, n_rising, PyLong_FromLongLong(rising)) < 0)
            goto done;
        Py_ssize_t qlen = PyObject_Length(qts);
        if (qlen < 0)
            goto done;
        if (2 * rising > qlen) {
            if (PyObject_SetAttr(st, n_sids, Py_None) < 0)
                goto done;
            Py_SETREF(ids, Py_NewRef(Py_None));
        }
    }
    /* self._prune((ts[k - 1] if k > i else clock) - dedup_ms), after the run is kept */
    if (prune_ids(qts, qid, ids, h0 - dedup) < 0)
        goto done;
    /* stats["trades"] += j - i; clock; last */
    if ((cnt = PyLong_FromSsize_t(j - i)) == NULL || (stats = PyObject_GetAttr(st, n_stats)) == NULL)
        goto done;
    PyObject *trades = PyDict_GetItemWithError(stats, n_trades);
    if (trades == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_KeyError, "trades");
        goto done;
    }
    if ((r = PyNumber_Add(trades, cnt)) == NULL || PyDict_SetItem(stats, n_trades, r) < 0)
        goto done;
    Py_CLEAR(r);
    if (PyObject_SetAttr(st, n_clock, PyList_GET_ITEM(ts, k)) < 0)
        goto done;
    if (set_attr_new(st, n_last, PyTuple_Pack(5, PyList_GET_ITEM(ts, k), PyList_GET_ITEM(px, k),
                                              PyList_GET_ITEM(pu, k), PyList_GET_ITEM(pdp, k),
                                              PyList_GET_ITEM(tids, k))) < 0)
        goto done;
    /* the fold: first highest and lowest price, volume and quote sums, most decimals */
    struct run_fold f;
    if (fold_columns(col, i, j, &f) < 0)
        goto done;
    v = f.v;
    q = f.q;
    PyObject *top = f.top, *low = f.low;
    Py_ssize_t top_k = f.top_k, low_k = f.low_k;
    long vmax = f.vmax, qmax = f.qmax;
    if ((hi = PyObject_GetAttr(st, n_hi)) == NULL || (lo = PyObject_GetAttr(st, n_lo)) == NULL)
        goto done;
    if (!PyList_CheckExact(hi) || !PyList_CheckExact(lo) || slot >= PyList_GET_SIZE(hi) ||
        slot >= PyList_GET_SIZE(lo)) {
        PyErr_SetString(PyExc_TypeError, "ticker state: unexpected _hi or _lo");
        goto done;
    }
    int up = PyObject_RichCompareBool(top, PyList_GET_ITEM(hi, slot), Py_GT);
    if (up < 0)
        goto done;
    if (up) {
        PyObject *pair = PyTuple_Pack(2, top, PyList_GET_ITEM(px, top_k));
        if (pair == NULL || PyList_SetItem(hi, slot, Py_NewRef(top)) < 0 ||
            PyList_SetItem(bucket, B_H, pair) < 0 ||
            PyList_SetItem(bucket, B_H_TS, Py_NewRef(PyList_GET_ITEM(ts, top_k))) < 0)
            goto done;
    }
    int down = PyObject_RichCompareBool(low, PyList_GET_ITEM(lo, slot), Py_LT);
    if (down < 0)
        goto done;
    if (down) {
        PyObject *pair = PyTuple_Pack(2, low, PyList_GET_ITEM(px, low_k));
        if (pair == NULL || PyList_SetItem(lo, slot, Py_NewRef(low)) < 0 ||
            PyList_SetItem(bucket, B_L, pair) < 0 ||
            PyList_SetItem(bucket, B_L_TS, Py_NewRef(PyList_GET_ITEM(ts, low_k))) < 0)
            goto done;
    }
    if (add_item(bucket, B_V, v) < 0 || add_item(bucket, B_Q, q) < 0 ||
        add_item(bucket, B_N, cnt) < 0)
        goto done;
    /* self._dp(bucket, vmax, qmax) */
    long long cur = PyLong_AsLongLong(PyList_GET_ITEM(bucket, B_V_DP));
    if (cur == -1 && PyErr_Occurred())
        goto done;
    if (vmax > cur) {
        if ((w = PyObject_GetAttr(st, n_vdp)) == NULL || !PyList_CheckExact(w) ||
            bump(w, cur, -1) < 0 || bump(w, vmax, 1) < 0 ||
            PyList_SetItem(bucket, B_V_DP, PyLong_FromLong(vmax)) < 0) {
            if (w != NULL && !PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "ticker state: unexpected _vdp");
            goto done;
        }
        Py_CLEAR(w);
    }
    cur = PyLong_AsLongLong(PyList_GET_ITEM(bucket, B_Q_DP));
    if (cur == -1 && PyErr_Occurred())
        goto done;
    if (qmax > cur) {
        if ((w = PyObject_GetAttr(st, n_qdp)) == NULL || !PyList_CheckExact(w) ||
            bump(w, cur, -1) < 0 || bump(w, qmax, 1) < 0 ||
            PyList_SetItem(bucket, B_Q_DP, PyLong_FromLong(qmax)) < 0) {
            if (w != NULL && !PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "ticker state: unexpected _qdp");
            goto done;
        }
        Py_CLEAR(w);
    }
    /* the window's high and low, if known (None: recomputed at the next record) */
    for (int side = 0; side < 2; side++) {
        PyObject *name = side ? n_wl : n_wh, *name_m = side ? n_wl_m : n_wh_m;
        PyObject *ext = side ? low : top;
        if ((w = PyObject_GetAttr(st, name)) == NULL)
            goto done;
        if (w != Py_None) {
            int better = PyObject_RichCompareBool(ext, w, side ? Py_LT : Py_GT);
            if (better < 0)
                goto done;
            if (!better) {
                int eq = PyObject_RichCompareBool(ext, w, Py_EQ);
                if (eq < 0)
                    goto done;
                if (eq) {
                    long long wm = attr_ll(st, name_m);
                    if (wm == -1 && PyErr_Occurred())
                        goto done;
                    better = m0 < wm;
                }
            }
            if (better && (PyObject_SetAttr(st, name, ext) < 0 ||
                           set_attr_new(st, name_m, PyLong_FromLongLong(m0)) < 0))
                goto done;
        }
        Py_CLEAR(w);
    }
    if (add_attr(st, n_v, v) < 0 || add_attr(st, n_q, q) < 0 || add_attr(st, n_n, cnt) < 0 ||
        PyObject_SetAttr(st, n_dirty, Py_True) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(idq);
    Py_XDECREF(ids);
    Py_XDECREF(run_ts);
    Py_XDECREF(run_ids);
    Py_XDECREF(r);
    Py_XDECREF(v);
    Py_XDECREF(q);
    Py_XDECREF(cnt);
    Py_XDECREF(stats);
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(w);
    return rc;
}

PyDoc_STRVAR(ticker_runs_doc,
"ticker_runs(state, batch, i) -> int\n\n"
"Fold the runs of TradeBatch ``batch`` from row ``i`` that TickerState.on_trades folds itself\n"
"with rising numeric ids, into ``state``; stop after a run at whose last trade a record is due,\n"
"or at a row it does not take (the Python loop's then). Returns the next row.");

static PyObject *ticker_runs(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "ticker_runs(state, batch, i)");
        return NULL;
    }
    PyObject *st = args[0], *b = args[1], *col[7] = {NULL}, *buckets = NULL, *params = NULL,
             *w = NULL, *result = NULL;
    Py_ssize_t i = PyLong_AsSsize_t(args[2]);
    if ((i == -1 && PyErr_Occurred()) || get_columns(b, col) < 0)
        goto done;
    Py_ssize_t n = PyList_GET_SIZE(col[0]);
    if ((buckets = PyObject_GetAttr(st, n_b)) == NULL || (params = PyObject_GetAttr(st, n_params)) == NULL)
        goto done;
    if (!PyList_CheckExact(buckets) || PyList_GET_SIZE(buckets) != T_BUCKETS) {
        PyErr_SetString(PyExc_TypeError, "ticker_runs: state._b must be a list of 1440 buckets");
        goto done;
    }
    long long dedup = attr_ll_capped(params, n_dedup_ms);
    if (dedup == -1 && PyErr_Occurred())
        goto done;
    while (i >= 0 && i < n && dedup >= 0 && dedup <= T_MAX_SPAN) {
        long long t0 = PyLong_AsLongLong(PyList_GET_ITEM(col[0], i));
        if (t0 == -1 && PyErr_Occurred())
            goto done;
        long long clock = attr_ll(st, n_clock);
        if (PyErr_Occurred())
            goto done;
        if ((w = PyObject_GetAttr(st, n_open_t)) == NULL)
            goto done;
        if (w == Py_None)
            break;
        long long open_t = PyLong_AsLongLong(w);
        Py_CLEAR(w);
        if (open_t == -1 && PyErr_Occurred())
            goto done;
        if (t0 < 0)  /* not from the decoder: the Python loop's */
            break;
        long long m0 = t0 - t0 % T_MINUTE;
        Py_ssize_t slot = (Py_ssize_t)((m0 / T_MINUTE) % T_BUCKETS);
        PyObject *bucket = PyList_GET_ITEM(buckets, slot);
        if (bucket == Py_None || t0 < clock || m0 - T_SPAN > open_t)
            break;
        if (!PyList_CheckExact(bucket) || PyList_GET_SIZE(bucket) != B_SIZE)
            break;
        long long next = attr_ll_capped(st, n_next), top_id = attr_ll(st, n_top_id);
        if (PyErr_Occurred())
            goto done;
        Py_ssize_t j = run_end(col[0], i, t0, m0 + T_MINUTE, next);
        if (j < 0)
            goto done;
        int fresh;
        long long top;
        if (scan_ids_core(col[1], i, j, top_id, &fresh, &top) < 0)
            goto done;
        if (!fresh)
            break;
        Py_INCREF(bucket);  /* held across the fold, which replaces items of other lists */
        int rc = fold_run(st, col, i, j, m0, slot, bucket, clock, top, dedup);
        Py_DECREF(bucket);
        if (rc < 0)
            goto done;
        long long last = PyLong_AsLongLong(PyList_GET_ITEM(col[0], j - 1));
        i = j;
        if (last >= next)
            break;  /* a record is due: the caller emits it */
    }
    result = PyLong_FromSsize_t(i);
done:
    for (int c = 0; c < 7; c++)
        Py_XDECREF(col[c]);
    Py_XDECREF(buckets);
    Py_XDECREF(params);
    Py_XDECREF(w);
    return result;
}

PyDoc_STRVAR(group_by_key_doc,
"group_by_key(messages) -> list of (key, [value, ...])\n\n"
"dataflows.common: a source batch of (key, value, ...) tuples grouped by key, keys in order of\n"
"first appearance, each key's values in order (_group_by_key_py is the reference). The Python\n"
"loop cost ~0.1 us a message, 4% of a trade flow.");

static PyObject *group_by_key(PyObject *self, PyObject *batch)
{
    if (!PyList_CheckExact(batch)) {
        PyErr_SetString(PyExc_TypeError, "group_by_key(messages: list)");
        return NULL;
    }
    PyObject *index = PyDict_New(), *out = PyList_New(0);
    if (index == NULL || out == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(batch); i++) {
        PyObject *msg = PyList_GET_ITEM(batch, i);
        if (!PyTuple_Check(msg) || PyTuple_GET_SIZE(msg) != 2) {
            PyErr_SetString(PyExc_TypeError, "group_by_key: messages are (key, value) tuples");
            goto fail;
        }
        PyObject *key = PyTuple_GET_ITEM(msg, 0), *values = PyDict_GetItemWithError(index, key);
        if (values == NULL) {
            if (PyErr_Occurred() || (values = PyList_New(0)) == NULL)
                goto fail;
            PyObject *pair = PyTuple_Pack(2, key, values);
            int rc = pair == NULL ? -1 : PyList_Append(out, pair);
            Py_XDECREF(pair);
            if (rc == 0)
                rc = PyDict_SetItem(index, key, values);
            Py_DECREF(values);  /* the pair and the index hold it */
            if (rc < 0)
                goto fail;
        }
        if (PyList_Append(values, PyTuple_GET_ITEM(msg, 1)) < 0)
            goto fail;
    }
    Py_DECREF(index);
    return out;
fail:
    Py_XDECREF(index);
    Py_XDECREF(out);
    return NULL;
}

/* -- candle_runs: the candle operator's common case --------------------------------------------
 * operators/candles.py, CandleState.on_trades: a run of trades in time order into an open
 * minute, closing none, with ids not seen, folded into the minute's candle. As ticker_runs, the
 * Python loop statement for statement, the rest (a late trade, a seen id, updates due) left to
 * it: the runs end at each update due (once a second of event time), and the Python loop cost
 * ~5 us a run, a quarter of the candle operator. tests/test_candles.py compares on_trades with
 * on_trade one by one, after every batch, both ways. */
static PyObject *n_open, *n_marked, *n_soonest, *n_done, *n_late_ms, *n_wm, *n_prune_at, *n_move;

static int intern_candle_names(void)
{
    struct { PyObject **slot; const char *name; } names[] = {
        {&n_open, "_open"}, {&n_marked, "_marked"}, {&n_soonest, "_soonest"},
        {&n_done, "_done"}, {&n_late_ms, "_late_ms"}, {&n_wm, "_wm"},
        {&n_prune_at, "_prune_at"}, {&n_move, "_move"},
    };
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
        if ((*names[k].slot = PyUnicode_InternFromString(names[k].name)) == NULL)
            return -1;
    return 0;
}

enum { K_O_TS, K_O, K_H_U, K_H, K_H_TS, K_L_U, K_L, K_L_TS, K_C_TS, K_C_U, K_C, K_V, K_V_DP, K_Q,
       K_Q_DP, K_N, K_SIZE };

/* c[k] = value (borrowed). */
static int set_item(PyObject *c, Py_ssize_t k, PyObject *value)
{
    return PyList_SetItem(c, k, Py_NewRef(value));
}

/* The ids of [i, j) are neither in ids nor repeated: entered (id -> ts), 1; else 0, ids as it
 * was; -1 on an error. */
static int enter_new_ids(PyObject *ids, PyObject *tids, PyObject *ts, Py_ssize_t i, Py_ssize_t j)
{
    for (Py_ssize_t x = i; x < j; x++) {
        int seen = PyDict_Contains(ids, PyList_GET_ITEM(tids, x));
        if (seen != 0)
            return seen < 0 ? -1 : 0;
    }
    for (Py_ssize_t x = i; x < j; x++) {
        PyObject *id = PyList_GET_ITEM(tids, x);
        int seen = PyDict_Contains(ids, id);
        if (seen == 0 && PyDict_SetItem(ids, id, PyList_GET_ITEM(ts, x)) < 0)
            seen = -1;
        if (seen != 0) {  /* repeated within the run (or an error): undo the run's entries */
            for (Py_ssize_t y = i; y < x; y++)
                if (PyDict_DelItem(ids, PyList_GET_ITEM(tids, y)) < 0)
                    return -1;
            return seen < 0 ? -1 : 0;
        }
    }
    return 1;
}

/* max(c[k], value) into c[k], small ints. */
static int raise_to(PyObject *c, Py_ssize_t k, long value)
{
    long cur = PyLong_AsLong(PyList_GET_ITEM(c, k));
    if (cur == -1 && PyErr_Occurred())
        return -1;
    return value > cur ? PyList_SetItem(c, k, PyLong_FromLong(value)) : 0;
}

/* The fold of run [i, j) into candle c (see CandleState.on_trades). */
static int fold_candle(PyObject *c, PyObject **col, Py_ssize_t i, Py_ssize_t j)
{
    PyObject *ts = col[0], *px = col[2], *pu = col[3];
    PyObject *cnt = NULL;
    Py_ssize_t k = j - 1;
    int rc = -1;
    struct run_fold f;
    if (fold_columns(col, i, j, &f) < 0)
        return -1;
    PyObject *v = f.v, *q = f.q, *top = f.top, *low = f.low;
    Py_ssize_t top_k = f.top_k, low_k = f.low_k;
    long vmax = f.vmax, qmax = f.qmax;
    int up = PyObject_RichCompareBool(top, PyList_GET_ITEM(c, K_H_U), Py_GT);
    if (up < 0 || (up && (set_item(c, K_H_U, top) < 0 || set_item(c, K_H, PyList_GET_ITEM(px, top_k)) < 0
                          || set_item(c, K_H_TS, PyList_GET_ITEM(ts, top_k)) < 0)))
        goto done;
    int down = PyObject_RichCompareBool(low, PyList_GET_ITEM(c, K_L_U), Py_LT);
    if (down < 0 || (down && (set_item(c, K_L_U, low) < 0 || set_item(c, K_L, PyList_GET_ITEM(px, low_k)) < 0
                              || set_item(c, K_L_TS, PyList_GET_ITEM(ts, low_k)) < 0)))
        goto done;
    if (set_item(c, K_C_TS, PyList_GET_ITEM(ts, k)) < 0 || set_item(c, K_C_U, PyList_GET_ITEM(pu, k)) < 0
        || set_item(c, K_C, PyList_GET_ITEM(px, k)) < 0)
        goto done;
    if ((cnt = PyLong_FromSsize_t(j - i)) == NULL || add_item(c, K_V, v) < 0 ||
        raise_to(c, K_V_DP, vmax) < 0 || add_item(c, K_Q, q) < 0 || raise_to(c, K_Q_DP, qmax) < 0
        || add_item(c, K_N, cnt) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(v);
    Py_XDECREF(q);
    Py_XDECREF(cnt);
    return rc;
}

PyDoc_STRVAR(candle_runs_doc,
"candle_runs(state, batch, i) -> int\n\n"
"Fold the runs of TradeBatch ``batch`` from row ``i`` that CandleState.on_trades folds itself\n"
"into ``state``; stop after a run whose updates are due (the caller marks and emits them), or\n"
"at a row it does not take. Returns the next row.");

static PyObject *candle_runs(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "candle_runs(state, batch, i)");
        return NULL;
    }
    PyObject *st = args[0], *b = args[1], *col[7] = {NULL}, *opened = NULL, *ids = NULL,
             *nexts = NULL, *w = NULL, *stats = NULL, *result = NULL;
    Py_ssize_t i = PyLong_AsSsize_t(args[2]);
    if ((i == -1 && PyErr_Occurred()) || get_columns(b, col) < 0)
        goto done;
    Py_ssize_t n = PyList_GET_SIZE(col[0]);
    if ((opened = PyObject_GetAttr(st, n_open)) == NULL || (ids = PyObject_GetAttr(st, n_sids)) == NULL
        || (nexts = PyObject_GetAttr(st, n_next)) == NULL || (stats = PyObject_GetAttr(st, n_stats)) == NULL)
        goto done;
    if (!PyDict_Check(opened) || !PyDict_Check(ids) || !PyList_CheckExact(nexts) ||
        PyList_GET_SIZE(nexts) == 0 || !PyDict_Check(stats)) {
        PyErr_SetString(PyExc_TypeError, "candle_runs: unexpected candle state");
        goto done;
    }
    long long late = attr_ll_capped(st, n_late_ms);
    if (late == -1 && PyErr_Occurred())
        goto done;
    while (i >= 0 && i < n && late >= 0 && late <= T_MAX_SPAN) {
        long long t0 = PyLong_AsLongLong(PyList_GET_ITEM(col[0], i));
        if (t0 == -1 && PyErr_Occurred())
            goto done;
        long long clock = attr_ll(st, n_clock), done_ = attr_ll(st, n_done);
        long long soonest = attr_ll_capped(st, n_soonest);
        if (PyErr_Occurred())
            goto done;
        if (t0 < 0 || t0 < clock)
            break;
        long long m0 = t0 - t0 % T_MINUTE;
        PyObject *key = PyLong_FromLongLong(m0);
        if (key == NULL)
            goto done;
        PyObject *c = PyDict_GetItemWithError(opened, key);  /* borrowed */
        Py_DECREF(key);
        if (c == NULL) {
            if (PyErr_Occurred())
                goto done;
            break;
        }
        if (!PyList_CheckExact(c) || PyList_GET_SIZE(c) != K_SIZE)
            break;
        /* updates are due from: the soonest throttle of the dirty intervals, all of them once
         * this minute is marked dirty in each */
        if ((w = PyObject_GetAttr(st, n_marked)) == NULL)
            goto done;
        int marked = 0;
        if (w != Py_None) {
            long long mk = PyLong_AsLongLong(w);
            if (mk == -1 && PyErr_Occurred())
                goto done;
            marked = mk == m0;
        }
        Py_CLEAR(w);
        long long due;
        if (marked) {
            due = soonest;
        } else {
            due = LLONG_MAX;
            for (Py_ssize_t x = 0; x < PyList_GET_SIZE(nexts); x++) {
                int overflow;
                long long v = PyLong_AsLongLongAndOverflow(PyList_GET_ITEM(nexts, x), &overflow);
                if ((v == -1 && PyErr_Occurred()) || overflow < 0) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_OverflowError, "a time below -2**63");
                    goto done;
                }
                if (overflow == 0 && v < due)  /* above LLONG_MAX: never due */
                    due = v;
            }
        }
        long long end = m0 + T_MINUTE < done_ + T_MINUTE + late ? m0 + T_MINUTE
                                                                 : done_ + T_MINUTE + late;
        if (t0 >= end)
            break;
        Py_ssize_t j = run_end(col[0], i, t0, end, due);
        if (j < 0)
            goto done;
        int fresh = enter_new_ids(ids, col[1], col[0], i, j);
        if (fresh < 0)
            goto done;
        if (!fresh)
            break;
        Py_INCREF(c);
        int rc = fold_candle(c, col, i, j);
        Py_DECREF(c);
        if (rc < 0)
            goto done;
        PyObject *trades = PyDict_GetItemWithError(stats, n_trades), *cnt = NULL, *sum = NULL;
        if (trades == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_KeyError, "trades");
            goto done;
        }
        rc = ((cnt = PyLong_FromSsize_t(j - i)) == NULL || (sum = PyNumber_Add(trades, cnt)) == NULL
              || PyDict_SetItem(stats, n_trades, sum) < 0) ? -1 : 0;
        Py_XDECREF(cnt);
        Py_XDECREF(sum);
        if (rc < 0)
            goto done;
        PyObject *last = PyList_GET_ITEM(col[0], j - 1);
        long long tk = PyLong_AsLongLong(last);
        if (tk == -1 && PyErr_Occurred())
            goto done;
        i = j;
        if (tk > clock) {
            if (PyObject_SetAttr(st, n_clock, last) < 0)
                goto done;
            clock = tk;
            /* self._move(ts[k] - late): prunes ids; closes nothing before end */
            long long wm = tk - late, cur = attr_ll(st, n_wm);
            long long prune_at = attr_ll(st, n_prune_at);
            if (PyErr_Occurred())
                goto done;
            if (wm > cur) {
                long long r = wm % T_MINUTE;  /* Python's floored modulo: wm may be negative */
                if (wm - (r < 0 ? r + T_MINUTE : r) > done_) {
                    PyErr_SetString(PyExc_RuntimeError, "candle_runs: a run closed a minute");
                    goto done;
                }
                if (PyDict_GET_SIZE(ids) > prune_at) {  /* the Python pruning, rarely */
                    PyObject *out = PyList_New(0), *wmo = PyLong_FromLongLong(wm), *r = NULL;
                    if (out != NULL && wmo != NULL)
                        r = PyObject_CallMethodObjArgs(st, n_move, wmo, out, NULL);
                    int bad = r == NULL || PyList_GET_SIZE(out) != 0;
                    Py_XDECREF(r);
                    Py_XDECREF(out);
                    Py_XDECREF(wmo);
                    if (bad) {
                        if (!PyErr_Occurred())
                            PyErr_SetString(PyExc_RuntimeError, "candle_runs: _move emitted");
                        goto done;
                    }
                } else if (set_attr_new(st, n_wm, PyLong_FromLongLong(wm)) < 0) {
                    goto done;
                }
            }
        }
        if (!marked || clock >= soonest)
            break;  /* updates to mark, maybe to emit: the caller's */
    }
    result = PyLong_FromSsize_t(i);
done:
    for (int c = 0; c < 7; c++)
        Py_XDECREF(col[c]);
    Py_XDECREF(opened);
    Py_XDECREF(ids);
    Py_XDECREF(nexts);
    Py_XDECREF(stats);
    Py_XDECREF(w);
    return result;
}

PyDoc_STRVAR(top_index_doc,
"top_index(counts) -> int\n\n"
"The greatest index of a list of ints whose count is non-zero, 0 if none (the ticker's most\n"
"decimals in its window, twice a record: operators/ticker.py, _top_dp_py is the reference).");

static PyObject *top_index(PyObject *self, PyObject *counts)
{
    if (!PyList_CheckExact(counts)) {
        PyErr_SetString(PyExc_TypeError, "top_index(counts: list)");
        return NULL;
    }
    for (Py_ssize_t k = PyList_GET_SIZE(counts) - 1; k > 0; k--) {
        int nonzero = PyObject_IsTrue(PyList_GET_ITEM(counts, k));
        if (nonzero < 0)
            return NULL;
        if (nonzero)
            return PyLong_FromSsize_t(k);
    }
    return PyLong_FromLong(0);
}

/* -- book frames: the feed handlers' common case -----------------------------------------------
 * connectors/exchanges: a handler turns an exchange's book frame into a canonical event, checks
 * it, applies it to its own book and verifies the exchange's checksum. In Python that is 4-10x
 * the frame's JSON decode, spread over a dozen calls (none above a tenth of the frame); issue 4's
 * goal is 3x. Each *_frame function below takes one exchange's plain book update (after
 * orjson.loads) through that whole path, statement for statement as the handler's Python does:
 * every field is checked before anything changes, and anything uncommon (a snapshot, a gap, a
 * duplicate, a book stale or unknown, a value not plainly valid, an odd type, several books in
 * one frame) answers None with nothing changed, and the handler's Python takes the frame. That
 * Python stays the reference (and the pure-Python build's); tests/test_frames.py compares the two
 * after every frame (events, stats, books, numbering) on the recordings and on generated frames.
 * Python objects these need (the Book type, valid_key, the symbol functions, the checksums'
 * references) are registered by the handlers' modules with frames_set(name, object).
 * The frame's parts are borrowed from msg across those callbacks: msg is the handler's fresh
 * decode, which no callback can reach, so nothing can free them meanwhile. */
static PyObject *fv_applied, *fv_duplicate, *fv_gap, *fv_skipped, *fv_space;
static PyObject *fo_book_type, *fo_valid_key, *fo_to_symbol, *fo_kraken_symbol, *fo_kraken_py,
    *fo_okx_py;
static PyObject *fk_type, *fk_ex, *fk_sym, *fk_ts, *fk_rts, *fk_action, *fk_seq, *fk_prev_seq,
    *fk_bids, *fk_asks, *fk_checksum, *fv_book, *fv_update, *fv_ok, *fv_stale, *fv_crossed,
    *fa_stats, *fa_tally, *fa_books, *fa_unsynced, *fa_seqs, *fa_seq_base, *fa_exchange, *fa_depth,
    *fa_truncate, *fa_checksum_bad, *fa_sync, *fa_synced, *fa_fresh, *fa_futures,
    *fs_book_events, *fs_events, *fs_crossed, *fs_resyncs, *fs_checksum_ok, *fm_b, *fm_a, *fm_c,
    *fm_as, *fm_bs, *fm_channel, *fm_product_id, *fm_changes, *fm_time,
    *fm_last_update_id, *fm_stream, *fm_data, *fm_e, *fm_U, *fm_u, *fm_E, *fm_pu,
    *fm_s, *fm_event, *fm_arg, *fm_inst_id, *fm_seq_id, *fm_prev_seq_id, *fm_topic;

static int intern_frame_names(void)
{
    struct { PyObject **p; const char *s; } names[] = {
        {&fk_type, "type"}, {&fk_ex, "ex"}, {&fk_sym, "sym"}, {&fk_ts, "ts"}, {&fk_rts, "rts"},
        {&fk_action, "action"}, {&fk_seq, "seq"}, {&fk_prev_seq, "prev_seq"},
        {&fk_bids, "bids"}, {&fk_asks, "asks"}, {&fk_checksum, "checksum"}, {&fv_book, "book"},
        {&fv_update, "update"}, {&fv_ok, "ok"}, {&fv_stale, "stale"}, {&fv_crossed, "crossed"},
        {&fa_stats, "stats"}, {&fa_tally, "_tally"}, {&fa_books, "books"}, {&fa_unsynced, "_unsynced"},
        {&fa_seqs, "_seq"}, {&fa_seq_base, "seq_base"}, {&fa_exchange, "exchange"},
        {&fa_depth, "depth"}, {&fa_truncate, "_truncate"}, {&fa_checksum_bad, "_checksum_bad"}, {&fa_sync, "_sync"},
        {&fa_synced, "synced"}, {&fa_fresh, "fresh"}, {&fa_futures, "futures"},
        {&fs_book_events, "book_events"}, {&fs_events, "events"}, {&fs_crossed, "crossed"},
        {&fs_resyncs, "resyncs"}, {&fs_checksum_ok, "checksum_ok"}, {&fm_b, "b"}, {&fm_a, "a"},
        {&fm_c, "c"}, {&fm_as, "as"}, {&fm_bs, "bs"}, {&fm_channel, "channel"},
        {&fm_product_id, "product_id"}, {&fm_changes, "changes"},
        {&fm_time, "time"}, {&fm_last_update_id, "lastUpdateId"}, {&fm_stream, "stream"},
        {&fm_data, "data"}, {&fm_e, "e"}, {&fm_U, "U"},
        {&fm_u, "u"}, {&fm_E, "E"}, {&fm_pu, "pu"}, {&fm_s, "s"}, {&fm_event, "event"},
        {&fm_arg, "arg"}, {&fm_inst_id, "instId"}, {&fm_seq_id, "seqId"},
        {&fm_prev_seq_id, "prevSeqId"}, {&fm_topic, "topic"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].p = PyUnicode_InternFromString(names[i].s)) == NULL)
            return -1;
    struct { PyObject **p; const char *s; } values[] = {
        {&fv_applied, "applied"}, {&fv_duplicate, "duplicate"}, {&fv_gap, "gap"},
        {&fv_skipped, "skipped"}, {&fv_space, " "},
    };
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        if ((*values[i].p = PyUnicode_InternFromString(values[i].s)) == NULL)
            return -1;
    return 0;
}

static PyObject *fo_own; /* operators.orderbook._own: a quantity's (units, decimals) */

PyDoc_STRVAR(frames_set_doc,
"frames_set(name, obj) -> None: register a Python object the book frames and FeedBook use:\n"
"'Book' (operators.orderbook.Book, what a FeedBook with a key beyond 128 bits becomes), 'own'\n"
"(operators.orderbook._own, for FeedBook.levels), 'valid_key', 'to_symbol', 'kraken_symbol',\n"
"'kraken_checksum_py', 'okx_checksum_py'. A frame that needs one not registered is left to\n"
"the Python.");

static void sym_slots_clear(void);

static PyObject *frames_set(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "frames_set(name: str, obj)");
        return NULL;
    }
    struct { const char *name; PyObject **slot; } slots[] = {
        {"Book", &fo_book_type}, {"own", &fo_own}, {"valid_key", &fo_valid_key},
        {"to_symbol", &fo_to_symbol}, {"kraken_symbol", &fo_kraken_symbol},
        {"kraken_checksum_py", &fo_kraken_py}, {"okx_checksum_py", &fo_okx_py},
    };
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
        if (PyUnicode_CompareWithASCIIString(args[0], slots[i].name) == 0) {
            if (!PyCallable_Check(args[1])) {
                PyErr_Format(PyExc_TypeError, "frames_set: %s must be callable", slots[i].name);
                return NULL;
            }
            Py_XSETREF(*slots[i].slot, Py_NewRef(args[1]));
            sym_slots_clear(); /* what they keep was found with the functions replaced */
            Py_RETURN_NONE;
        }
    }
    PyErr_Format(PyExc_ValueError, "frames_set: unknown name %R", args[0]);
    return NULL;
}

/* A callback's ordinary exception cleared (the Python path will meet it again and word it);
 * 0, or -1 where it is not ordinary (KeyboardInterrupt, MemoryError...: it must propagate). */
static int clear_ordinary(void)
{
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_MemoryError))
        return -1;
    PyErr_Clear();
    return 0;
}

static int plain_ascii(PyObject *t)
{
    return PyUnicode_CheckExact(t) && PyUnicode_IS_COMPACT_ASCII(t);
}

static int text_is(PyObject *t, const char *lit)
{
    size_t n = strlen(lit); /* a length too: JSON text may hold a NUL */
    return plain_ascii(t) && (size_t)PyUnicode_GET_LENGTH(t) == n &&
           memcmp(PyUnicode_DATA(t), lit, n) == 0;
}

static int starts_with(PyObject *t, const char *lit)
{
    size_t n = strlen(lit);
    return plain_ascii(t) && (size_t)PyUnicode_GET_LENGTH(t) >= n &&
           memcmp(PyUnicode_DATA(t), lit, n) == 0;
}

/* An exact int in [lo, hi] as a long long: 1, else 0. */
static int int_in(PyObject *v, long long lo, long long hi, long long *out)
{
    int overflow;
    if (v == NULL || !PyLong_CheckExact(v))
        return 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || x < lo || x > hi)
        return 0;
    *out = x;
    return 1;
}

#define MAX_INT_LL 9223372036854775807LL /* events.MAX_INT */
#define MAX_TS_LL 9999999999999LL        /* events.MAX_TS */

/* Plain ASCII digits [0-9]{1,digits} as a long long: 1, else 0. */
static int digits_text(const char *s, Py_ssize_t n, int digits, long long *out)
{
    if (n == 0 || n > digits)
        return 0;
    long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

static int digits_of(PyObject *t, int digits, long long *out)
{
    return plain_ascii(t) &&
           digits_text((const char *)PyUnicode_DATA(t), PyUnicode_GET_LENGTH(t), digits, out);
}

/* Kraken's subscribed depth of a book channel: int(channel.partition("-")[2] or self.depth),
 * plainly. A new reference (its value in *depth); NULL without an exception where it is not
 * plain (the Python decides), with one on an error. */
static PyObject *kraken_depth(PyObject *h, const char *ch, Py_ssize_t n, long long *depth)
{
    const char *dash = memchr(ch, '-', (size_t)n);
    if (dash != NULL && dash + 1 < ch + n)
        return digits_text(dash + 1, ch + n - dash - 1, 9, depth) ? PyLong_FromLongLong(*depth)
                                                                   : NULL;
    PyObject *d = PyObject_GetAttr(h, fa_depth);
    if (int_in(d, LLONG_MIN, LLONG_MAX, depth))
        return d;
    Py_XDECREF(d);
    clear_ordinary();
    return NULL;
}

/* base.sec_to_ms of text plainly [0-9]{1,13}(\.[0-9]*)?: 1 and *ms, else 0. */
static int sec_ms_text(const char *s, Py_ssize_t n, long long *ms)
{
    Py_ssize_t i = 0;
    long long whole = 0, frac = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        if (i >= 13)
            return 0;
        whole = whole * 10 + (s[i] - '0');
    }
    if (i == 0)
        return 0;
    int k = 0;
    if (i < n) {
        if (s[i++] != '.')
            return 0;
        for (; i < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                return 0;
            if (k < 3) {
                frac = frac * 10 + (s[i] - '0');
                k++;
            }
        }
    }
    for (; k < 3; k++)
        frac *= 10;
    *ms = whole * 1000 + frac;
    return 1;
}

static int sec_ms(PyObject *t, long long *ms)
{
    return plain_ascii(t) && sec_ms_text((const char *)PyUnicode_DATA(t), PyUnicode_GET_LENGTH(t), ms);
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's days_from_civil). */
static long long days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* base.iso_to_ms of text plainly YYYY-MM-DDTHH:MM:SS(.[0-9]+)?Z?: 1 and *ms, else 0. As
 * calendar.timegm, days, hours, minutes and seconds count linearly (day 31 of a 30-day month is
 * the 1st of the next); the year must be 1-9999 and the month 1-12 (else datetime refuses). */
static int iso_ms_text(const char *s, Py_ssize_t n, long long *ms)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    if (n < 19)
        return 0;
    for (int i = 0; i < 19; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return 0;
    }
#define TWO(i) ((s[i] - '0') * 10 + (s[(i) + 1] - '0'))
    int year = TWO(0) * 100 + TWO(2), mon = TWO(5), day = TWO(8);
    if (year < 1 || mon < 1 || mon > 12)
        return 0;
    long long secs = (days_from_civil(year, mon, 1) + day - 1) * 86400LL + TWO(11) * 3600LL +
                     TWO(14) * 60LL + TWO(17);
#undef TWO
    Py_ssize_t i = 19;
    long long frac = 0;
    int k = 0;
    if (i < n && s[i] == '.') {
        Py_ssize_t start = ++i;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            if (k < 3) {
                frac = frac * 10 + (s[i] - '0');
                k++;
            }
        }
        if (i == start)
            return 0;
        for (; k < 3; k++)
            frac *= 10;
    }
    if (i < n && s[i] == 'Z')
        i++;
    if (i != n)
        return 0;
    *ms = secs * 1000 + frac;
    return 1;
}

static int iso_ms(PyObject *t, long long *ms)
{
    return plain_ascii(t) && iso_ms_text((const char *)PyUnicode_DATA(t), PyUnicode_GET_LENGTH(t), ms);
}

/* The levels of one side of an event, as book_levels reads them: the price's units (the book's
 * key), the strings (borrowed from the emitted event, which holds them) and whether the quantity
 * is non-zero. */
typedef struct {
    unsigned __int128 k;
    PyObject *px, *qty;
    int nonzero;
} Lv;

typedef struct {
    Lv *v;
    Py_ssize_t n, cap;
    Lv buf[16];
} Lvs;

static void lvs_init(Lvs *s)
{
    s->v = s->buf;
    s->n = 0;
    s->cap = 16;
}

static void lvs_free(Lvs *s)
{
    if (s->v != s->buf)
        PyMem_Free(s->v);
    lvs_init(s);
}

/* One [px, qty] as book_levels accepts it plainly (fast_units: a price > 0, a quantity >= 0):
 * 1, else 0 (book_levels would refuse it or ask the Python parser), -1 error. */
static int lvs_push(Lvs *s, PyObject *px, PyObject *qty)
{
    unsigned __int128 pu, qu;
    int dp;
    if (!plain_ascii(px) || !plain_ascii(qty) ||
        !fast_units((const char *)PyUnicode_DATA(px), PyUnicode_GET_LENGTH(px), &pu, &dp) ||
        pu < 1 ||
        !fast_units((const char *)PyUnicode_DATA(qty), PyUnicode_GET_LENGTH(qty), &qu, &dp))
        return 0;
    if (s->n == s->cap) {
        Lv *v = PyMem_Malloc(2 * (size_t)s->cap * sizeof(Lv));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(v, s->v, (size_t)s->n * sizeof(Lv));
        if (s->v != s->buf)
            PyMem_Free(s->v);
        s->v = v;
        s->cap *= 2;
    }
    s->v[s->n].k = pu;
    s->v[s->n].px = px;
    s->v[s->n].qty = qty;
    s->v[s->n].nonzero = qu != 0;
    s->n++;
    return 1;
}

/* A new [px, qty] appended to out, and its levels to s: as lvs_push. */
static int pair_into(PyObject *out, Lvs *s, PyObject *px, PyObject *qty)
{
    int rc = lvs_push(s, px, qty);
    if (rc != 1)
        return rc;
    PyObject *pair = PyList_New(2);
    if (pair == NULL)
        return -1;
    PyList_SET_ITEM(pair, 0, Py_NewRef(px));
    PyList_SET_ITEM(pair, 1, Py_NewRef(qty));
    return append_new(out, pair) < 0 ? -1 : 1;
}

/* -- FeedBook: a feed handler's own book, in C ------------------------------------------------
 * operators.orderbook.Book keeps each side in a dict of int keys and (px, qty) tuples: after the
 * book frames above went to C, that was most of what was left of a frame (the dict entries of a
 * book of thousands of levels miss the caches, and a checksum looked up 20 to 50 of them). A
 * FeedBook keeps each side as one array of (units, px, qty) sorted with the best level last (bids
 * ascending, asks descending: updates land near the end, where inserting moves little). It is
 * what the handlers with a compiled path keep (Handler._book_type); it answers Book's calls that
 * they and their tests make (apply of snapshots and updates, seq, status, top, cut, best_bid,
 * best_ask, crossed, depth, levels, __getstate__ in Book's form) with Book's results, which
 * tests/test_frames.py checks on generated events. A key beyond 128 bits (a price of more than
 * 38 digits: garbage, but one Book takes) turns it into a plain Book it then hands every call. */
typedef struct {
    unsigned __int128 k;
    PyObject *px, *qty;
} Entry;

/* A level's part of a checksum's text, kept for its (px, qty) strings (held: no other string
 * can take their address): see book_crc. */
typedef struct {
    PyObject *px, *qty;
    unsigned char *frag;
    Py_ssize_t n;
} Frag;
#define NFRAGS 128

/* Each side is a row of chunks, each a sorted array of at most CHUNK entries: a level set deep
 * in a book of thousands moved every entry behind it in one array (the memmove was a tenth of a
 * Binance futures frame); in a chunk it moves at most CHUNK. */
#define CHUNK 64

typedef struct {
    Entry *v; /* room for CHUNK */
    Py_ssize_t n;
    unsigned __int128 last; /* v[n - 1].k: what the row's search reads */
} Chunk;

typedef struct {
    Chunk *c; /* none empty */
    Py_ssize_t nc, ccap, n; /* chunks, room for them, entries */
    unsigned long long gen; /* moved by every change: what a side's cached text was built at */
} Row;

/* Row order: a before b (bids ascending, asks descending: the best last). */
#define BEFORE(a, b, ask) ((ask) ? (a) > (b) : (a) < (b))

/* A row's entries from the best down: row_it, then row_next until NULL. */
typedef struct {
    Row *r;
    Py_ssize_t ci, j;
} RowIt;

static void row_it(RowIt *it, Row *r)
{
    it->r = r;
    it->ci = r->nc - 1;
    it->j = r->nc > 0 ? r->c[r->nc - 1].n - 1 : -1;
}

static Entry *row_next(RowIt *it)
{
    while (it->ci >= 0 && it->j < 0)
        if (--it->ci >= 0)
            it->j = it->r->c[it->ci].n - 1;
    return it->ci < 0 ? NULL : &it->r->c[it->ci].v[it->j--];
}

static Entry *row_best(Row *r)
{
    return r->nc > 0 ? &r->c[r->nc - 1].v[r->c[r->nc - 1].n - 1] : NULL;
}

/* A side's part of Kraken's checksum text (its top 10 fragments, joined), with the running CRC
 * after it for the asks (they come first): an update touches one side, and the other side's
 * part is reused as it was (see book_crc). */
typedef struct {
    unsigned char *buf;
    size_t n, cap;
    unsigned long long gen; /* the row's gen it was built at */
    int valid, levels;
    uint32_t crc;               /* asks: the running CRC after this text */
    PyObject *px[10], *qty[10]; /* held: the levels it was built from, best first */
    size_t end[10];             /* the text's length after each */
    uint32_t at[10];            /* asks: the running CRC after each */
} SideText;

typedef struct {
    PyObject_HEAD
    Row side[2]; /* 0 bids, 1 asks */
    PyObject *seq, *status, *book; /* book: the plain Book it became, or NULL */
    Frag *frags;                   /* NFRAGS of them once a checksum was asked */
    int frag_mode;                 /* which checksum they are for */
    SideText text[2];              /* Kraken's checksum text of each side */
} FeedBook;

static PyTypeObject FeedBookType;

static void frags_clear(FeedBook *b)
{
    for (int s = 0; s < 2; s++) { /* a side's text is made of fragments: gone with them */
        SideText old = b->text[s];
        memset(&b->text[s], 0, sizeof(SideText)); /* emptied before anything is released */
        PyMem_Free(old.buf);
        for (int i = 0; i < 10; i++) {
            Py_XDECREF(old.px[i]);
            Py_XDECREF(old.qty[i]);
        }
    }
    for (int i = 0; b->frags != NULL && i < NFRAGS; i++) {
        Py_CLEAR(b->frags[i].px);
        Py_CLEAR(b->frags[i].qty);
        PyMem_Free(b->frags[i].frag);
        b->frags[i].frag = NULL;
    }
    PyMem_Free(b->frags);
    b->frags = NULL;
}

static void row_clear(Row *r)
{
    Chunk *c = r->c; /* detached first: a string's release could run code that reads the row */
    Py_ssize_t nc = r->nc;
    r->c = NULL;
    r->nc = r->ccap = r->n = 0;
    r->gen++;
    for (Py_ssize_t ci = 0; ci < nc; ci++) {
        for (Py_ssize_t i = 0; i < c[ci].n; i++) {
            Py_DECREF(c[ci].v[i].px);
            Py_DECREF(c[ci].v[i].qty);
        }
        PyMem_Free(c[ci].v);
    }
    PyMem_Free(c);
}

static void chunk_sync(Chunk *c)
{
    if (c->n > 0)
        c->last = c->v[c->n - 1].k;
}

/* A new empty chunk at index at (those from there on move up): 0, or -1 (no memory). */
static int chunk_insert(Row *r, Py_ssize_t at)
{
    if (r->nc == r->ccap) {
        Py_ssize_t cap = r->ccap ? 2 * r->ccap : 4;
        Chunk *c = PyMem_Realloc(r->c, (size_t)cap * sizeof(Chunk));
        if (c == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        r->c = c;
        r->ccap = cap;
    }
    Entry *v = PyMem_Malloc(CHUNK * sizeof(Entry));
    if (v == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memmove(&r->c[at + 1], &r->c[at], (size_t)(r->nc - at) * sizeof(Chunk));
    r->c[at].v = v;
    r->c[at].n = 0;
    r->nc++;
    return 0;
}

/* Chunk at dropped (its entries already gone or moved). */
static void chunk_remove(Row *r, Py_ssize_t at)
{
    PyMem_Free(r->c[at].v);
    memmove(&r->c[at], &r->c[at + 1], (size_t)(r->nc - at - 1) * sizeof(Chunk));
    r->nc--;
}

/* Chunk ci, left under a quarter full by a removal, merged with a neighbour or evened out with
 * it: the chunks stay a quarter full at least (bounded memory and search). */
static void row_even(Row *r, Py_ssize_t ci)
{
    if (r->c[ci].n >= CHUNK / 4 || r->nc < 2)
        return;
    Py_ssize_t a = ci + 1 < r->nc ? ci : ci - 1; /* the pair a, a + 1 */
    Chunk *x = &r->c[a], *y = &r->c[a + 1];
    Py_ssize_t total = x->n + y->n, m;
    if (total <= CHUNK) {
        memcpy(x->v + x->n, y->v, (size_t)y->n * sizeof(Entry));
        x->n = total;
        chunk_sync(x);
        chunk_remove(r, a + 1);
        return;
    }
    if (x->n < total / 2) { /* y's first entries to x's end */
        m = total / 2 - x->n;
        memcpy(x->v + x->n, y->v, (size_t)m * sizeof(Entry));
        memmove(y->v, y->v + m, (size_t)(y->n - m) * sizeof(Entry));
        x->n += m;
        y->n -= m;
    } else { /* x's last entries to y's front */
        m = x->n - total / 2;
        memmove(y->v + m, y->v, (size_t)y->n * sizeof(Entry));
        memcpy(y->v, x->v + x->n - m, (size_t)m * sizeof(Entry));
        x->n -= m;
        y->n += m;
    }
    chunk_sync(x);
    chunk_sync(y);
}

/* Where k is or would go in a row: its chunk *ci (the first whose last entry is not before k,
 * else the last) and the index in it; *found. */
static Py_ssize_t row_find(Row *r, unsigned __int128 k, int ask, Py_ssize_t *ci, int *found)
{
    *found = 0;
    *ci = 0;
    if (r->nc == 0)
        return 0;
    Py_ssize_t lo = 0, hi = r->nc - 1;
    if (r->c[hi].last == k) { /* the best level: the common case */
        *ci = hi;
        *found = 1;
        return r->c[hi].n - 1;
    }
    if (BEFORE(k, r->c[hi].v[0].k, ask)) /* else in the best chunk, where most updates go */
        while (lo < hi) {
            Py_ssize_t mid = lo + (hi - lo) / 2;
            if (BEFORE(r->c[mid].last, k, ask))
                lo = mid + 1;
            else
                hi = mid;
        }
    else
        lo = hi;
    *ci = lo;
    Chunk *c = &r->c[lo];
    Py_ssize_t a = 0, b = c->n;
    while (a < b) {
        Py_ssize_t mid = a + (b - a) / 2;
        unsigned __int128 m = c->v[mid].k;
        if (m == k) {
            *found = 1;
            return mid;
        }
        if (BEFORE(m, k, ask))
            a = mid + 1;
        else
            b = mid;
    }
    return a;
}

/* One level set (qty zero: removed), as _Side.set does for each: 0, or -1 (no memory). */
static int row_set(Row *r, int ask, unsigned __int128 k, int nonzero, PyObject *px, PyObject *qty)
{
    Py_ssize_t ci;
    int found;
    r->gen++;
    Py_ssize_t i = row_find(r, k, ask, &ci, &found);
    if (found) {
        Chunk *c = &r->c[ci];
        Entry *e = &c->v[i];
        if (nonzero) {
            Py_SETREF(e->px, Py_NewRef(px));
            Py_SETREF(e->qty, Py_NewRef(qty));
            return 0;
        }
        PyObject *p = e->px, *q = e->qty;
        memmove(e, e + 1, (size_t)(c->n - i - 1) * sizeof(Entry));
        c->n--;
        r->n--;
        if (c->n == 0) {
            chunk_remove(r, ci);
        } else {
            chunk_sync(c);
            row_even(r, ci);
        }
        Py_DECREF(p);
        Py_DECREF(q);
        return 0;
    }
    if (!nonzero)
        return 0;
    if (r->nc == 0 && chunk_insert(r, 0) < 0)
        return -1;
    if (r->c[ci].n == CHUNK) { /* full: its upper half to a new chunk after it */
        if (chunk_insert(r, ci + 1) < 0)
            return -1;
        Chunk *c = &r->c[ci], *d = &r->c[ci + 1];
        memcpy(d->v, c->v + CHUNK / 2, (CHUNK / 2) * sizeof(Entry));
        c->n = d->n = CHUNK / 2;
        chunk_sync(c);
        chunk_sync(d);
        if (i > CHUNK / 2) {
            ci++;
            i -= CHUNK / 2;
        }
    }
    Chunk *c = &r->c[ci];
    memmove(&c->v[i + 1], &c->v[i], (size_t)(c->n - i) * sizeof(Entry));
    c->v[i].k = k;
    c->v[i].px = Py_NewRef(px);
    c->v[i].qty = Py_NewRef(qty);
    c->n++;
    r->n++;
    chunk_sync(c);
    return 0;
}

static int fb_crossed(FeedBook *b)
{
    Entry *bid = row_best(&b->side[0]), *ask = row_best(&b->side[1]);
    return bid != NULL && ask != NULL && bid->k >= ask->k;
}

static PyObject *fb_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    FeedBook *b = (FeedBook *)type->tp_alloc(type, 0);
    if (b == NULL)
        return NULL;
    b->seq = Py_NewRef(Py_None);
    b->status = Py_NewRef(fv_stale); /* until the first snapshot */
    return (PyObject *)b;
}

static void fb_dealloc(FeedBook *b)
{
    row_clear(&b->side[0]);
    row_clear(&b->side[1]);
    Py_XDECREF(b->seq);
    Py_XDECREF(b->status);
    Py_XDECREF(b->book);
    frags_clear(b);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

/* "bids" 0, "asks" 1, else -1 with a ValueError. */
static int side_index(PyObject *name)
{
    if (text_is(name, "bids"))
        return 0;
    if (text_is(name, "asks"))
        return 1;
    PyErr_Format(PyExc_ValueError, "side must be 'bids' or 'asks', not %R", name);
    return -1;
}

/* The plain Book this one becomes (its levels, seq and status), from Book's own state form. */
static PyObject *fb_getstate(FeedBook *b, PyObject *unused);

static int become_book(FeedBook *b)
{
    if (b->book != NULL)
        return 0;
    if (fo_book_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FeedBook: operators.orderbook.Book is not registered");
        return -1;
    }
    PyObject *state = fb_getstate(b, NULL);
    PyObject *book = state == NULL ? NULL : PyObject_CallNoArgs(fo_book_type);
    PyObject *r = book == NULL ? NULL : PyObject_CallMethod(book, "__setstate__", "(O)", state);
    Py_XDECREF(state);
    if (r == NULL) {
        Py_XDECREF(book);
        return -1;
    }
    Py_DECREF(r);
    row_clear(&b->side[0]);
    row_clear(&b->side[1]);
    b->book = book;
    return 0;
}

/* Units of an exact int key >= 0 below 2**128: 1, else 0 (beyond: the caller hands over). */
static int key_units(PyObject *key, unsigned __int128 *k)
{
    if (!PyLong_CheckExact(key) || _PyLong_Sign(key) < 0 || _PyLong_NumBits(key) > 128)
        return 0;
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    const PyLongObject *o = (const PyLongObject *)key; /* 3.11's digits: see long_of */
    unsigned __int128 d = 0;
    for (Py_ssize_t i = Py_SIZE(o) - 1; i >= 0; i--)
        d = (d << PyLong_SHIFT) | o->ob_digit[i];
    *k = d;
#else
    unsigned char bytes[16];
#if PY_VERSION_HEX >= 0x030D0000
    if (PyLong_AsNativeBytes(key, bytes, 16, Py_ASNATIVEBYTES_LITTLE_ENDIAN |
                                                 Py_ASNATIVEBYTES_UNSIGNED_BUFFER) < 0)
        return 0;
#else
    if (_PyLong_AsByteArray((PyLongObject *)key, bytes, 16, 1, 0) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    unsigned __int128 v = 0;
    for (int i = 15; i >= 0; i--)
        v = (v << 8) | bytes[i];
    *k = v;
#endif
    return 1;
}

/* Book._Side.set of a BookEvent's levels ((key, px, qty units, qty) tuples) on side s:
 * 1 done, 0 a key does not fit (nothing changed: the caller hands over), -1 error. */
static int fb_set_levels(FeedBook *b, int s, PyObject *levels)
{
    if (!PyList_Check(levels) && !PyTuple_Check(levels)) {
        PyErr_SetString(PyExc_TypeError, "levels must be a list of (key, px, qty units, qty)");
        return -1;
    }
    PyObject *seq = PySequence_Fast(levels, "levels");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) { /* every key checked first: all or nothing */
        PyObject *lv = PySequence_Fast_GET_ITEM(seq, i);
        unsigned __int128 k;
        if (!PyTuple_Check(lv) || PyTuple_GET_SIZE(lv) != 4) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "a level is a (key, px, qty units, qty) tuple");
            return -1;
        }
        if (!key_units(PyTuple_GET_ITEM(lv, 0), &k)) {
            Py_DECREF(seq);
            return 0;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lv = PySequence_Fast_GET_ITEM(seq, i);
        unsigned __int128 k;
        if (!key_units(PyTuple_GET_ITEM(lv, 0), &k)) { /* levels_fit said it fits */
            Py_DECREF(seq);
            PyErr_SetString(PyExc_RuntimeError, "FeedBook: the levels changed while applied");
            return -1;
        }
        int nonzero = PyObject_IsTrue(PyTuple_GET_ITEM(lv, 2));
        if (nonzero < 0 || row_set(&b->side[s], s, k, nonzero, PyTuple_GET_ITEM(lv, 1),
                                   PyTuple_GET_ITEM(lv, 3)) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 1;
}

/* A snapshot's levels into an empty side s at once: the last of each price wins and a zero
 * removes it, as setting them one by one does, but sorted once (one by one, a side sent best
 * first inserted every level at the far end of its row: quadratic in a 1,000-level REST
 * snapshot). The keys fit (levels_fit). 0, or -1 with an exception. */
typedef struct {
    unsigned __int128 k;
    Py_ssize_t i;
    int nonzero;
} Load;

static int load_cmp(const void *a, const void *b)
{
    const Load *x = a, *y = b;
    if (x->k != y->k)
        return x->k < y->k ? -1 : 1;
    return x->i < y->i ? -1 : (x->i > y->i);
}

static int fb_load(FeedBook *b, int s, PyObject *levels)
{
    PyObject *seq = PySequence_Fast(levels, "levels");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), kept = 0;
    Load *l = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Load));
    Row *r = &b->side[s];
    int rc = -1;
    if (l == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lv = PySequence_Fast_GET_ITEM(seq, i);
        key_units(PyTuple_GET_ITEM(lv, 0), &l[i].k);
        l[i].i = i;
        if ((l[i].nonzero = PyObject_IsTrue(PyTuple_GET_ITEM(lv, 2))) < 0)
            goto done;
    }
    Py_ssize_t up = 1, down = 1; /* sent sorted (as exchanges do, best first): no sort */
    for (Py_ssize_t i = 1; i < n && (up || down); i++) {
        up = up && l[i - 1].k < l[i].k;
        down = down && l[i - 1].k > l[i].k;
    }
    if (down) /* distinct keys: their order is the sorted one */
        for (Py_ssize_t i = 0, j = n - 1; i < j; i++, j--) {
            Load x = l[i];
            l[i] = l[j];
            l[j] = x;
        }
    else if (!up)
        qsort(l, (size_t)n, sizeof(Load), load_cmp);
    for (Py_ssize_t i = 0; i < n; i++) /* the last of each key, if not a zero */
        if ((i + 1 == n || l[i + 1].k != l[i].k) && l[i].nonzero)
            l[kept++] = l[i];
    row_clear(r);
    for (Py_ssize_t j = 0; j < kept; j++) { /* bids ascending, asks descending */
        if (j % (CHUNK * 3 / 4) == 0 && chunk_insert(r, r->nc) < 0) { /* room to grow */
            row_clear(r); /* no half side: empty, as a failed load always left it */
            goto done;
        }
        Load *x = &l[s ? kept - 1 - j : j];
        PyObject *lv = PySequence_Fast_GET_ITEM(seq, x->i);
        Chunk *c = &r->c[r->nc - 1];
        c->v[c->n].k = x->k;
        c->v[c->n].px = Py_NewRef(PyTuple_GET_ITEM(lv, 1));
        c->v[c->n].qty = Py_NewRef(PyTuple_GET_ITEM(lv, 3));
        c->n++;
        r->n++;
        chunk_sync(c);
    }
    r->gen++;
    rc = 0;
done:
    PyMem_Free(l);
    Py_DECREF(seq);
    return rc;
}

static int levels_fit(PyObject *levels)
{
    PyObject *seq = PySequence_Fast(levels, "levels");
    if (seq == NULL)
        return -1;
    int fit = 1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && fit; i++) {
        PyObject *lv = PySequence_Fast_GET_ITEM(seq, i);
        unsigned __int128 k;
        fit = PyTuple_Check(lv) && PyTuple_GET_SIZE(lv) == 4 &&
              key_units(PyTuple_GET_ITEM(lv, 0), &k) &&
              PyLong_CheckExact(PyTuple_GET_ITEM(lv, 2)); /* its truth runs no Python code */
    }
    Py_DECREF(seq);
    return fit;
}

/* Book.apply, for the snapshots and updates a handler makes. */
static PyObject *fb_apply(FeedBook *b, PyObject *e)
{
    if (b->book != NULL)
        return PyObject_CallMethod(b->book, "apply", "(O)", e);
    PyObject *action = PyObject_GetAttr(e, fk_action), *seq = NULL, *prev = NULL, *bids = NULL,
             *asks = NULL, *out = NULL, *cur_seq = NULL, *cur_status = NULL;
    if (action == NULL || (seq = PyObject_GetAttr(e, fk_seq)) == NULL ||
        (prev = PyObject_GetAttr(e, fk_prev_seq)) == NULL ||
        (bids = PyObject_GetAttr(e, fk_bids)) == NULL ||
        (asks = PyObject_GetAttr(e, fk_asks)) == NULL)
        goto done;
    int snap = text_is(action, "snapshot");
    if (!snap && !text_is(action, "update")) {
        PyErr_Format(PyExc_ValueError, "a feed handler's book takes snapshots and updates, not %R",
                     action);
        goto done;
    }
    int fit = levels_fit(bids);
    if (fit > 0)
        fit = levels_fit(asks);
    if (fit < 0)
        goto done;
    if (!fit) { /* a key beyond 128 bits: a plain Book from here on */
        if (become_book(b) == 0)
            out = PyObject_CallMethod(b->book, "apply", "(O)", e);
        goto done;
    }
    /* held while compared (a comparison may run code), then the book re-checked */
    cur_seq = Py_NewRef(b->seq);
    cur_status = Py_NewRef(b->status);
    int newer = cur_seq == Py_None ? 1 : PyObject_RichCompareBool(seq, cur_seq, Py_GE);
    int le = (newer < 0 || cur_seq == Py_None) ? 0 : PyObject_RichCompareBool(seq, cur_seq, Py_LE);
    int stale = (newer < 0 || le < 0) ? 0 : PyObject_RichCompareBool(cur_status, fv_stale, Py_EQ);
    int ne = (newer < 0 || le < 0 || stale < 0 || prev == Py_None) ? 0
             : PyObject_RichCompareBool(prev, cur_seq, Py_NE);
    if (newer < 0 || le < 0 || stale < 0 || ne < 0)
        goto done;
    if (b->book != NULL || b->seq != cur_seq || b->status != cur_status) {
        PyErr_SetString(PyExc_RuntimeError, "FeedBook: the book changed while compared");
        goto done;
    }
    if (snap && newer) {
        row_clear(&b->side[0]);
        row_clear(&b->side[1]);
        if (fb_load(b, 0, bids) < 0 || fb_load(b, 1, asks) < 0)
            goto done;
        Py_SETREF(b->seq, Py_NewRef(seq));
        Py_SETREF(b->status, Py_NewRef(fb_crossed(b) ? fv_crossed : fv_ok));
        out = Py_NewRef(fv_applied);
        goto done;
    }
    if (le) {
        out = Py_NewRef(fv_duplicate);
        goto done;
    }
    if (stale) {
        out = Py_NewRef(fv_skipped);
        goto done;
    }
    if (ne) {
        Py_SETREF(b->status, Py_NewRef(fv_stale));
        out = Py_NewRef(fv_gap);
        goto done;
    }
    if (fb_set_levels(b, 0, bids) < 0 || fb_set_levels(b, 1, asks) < 0)
        goto done;
    Py_SETREF(b->seq, Py_NewRef(seq));
    Py_SETREF(b->status, Py_NewRef(fb_crossed(b) ? fv_crossed : fv_ok));
    out = Py_NewRef(fv_applied);
done:
    Py_XDECREF(cur_seq);
    Py_XDECREF(cur_status);
    Py_XDECREF(action);
    Py_XDECREF(seq);
    Py_XDECREF(prev);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    return out;
}

/* The best n levels of side s as (px, qty) tuples, best first. */
static PyObject *row_top(Row *r, Py_ssize_t n)
{
    n = n < 0 ? 0 : (n > r->n ? r->n : n);
    PyObject *out = PyList_New(n);
    RowIt it;
    row_it(&it, r);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        Entry *e = row_next(&it);
        PyObject *t = PyTuple_Pack(2, e->px, e->qty);
        if (t == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, t);
    }
    return out;
}

static PyObject *fb_top(FeedBook *b, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "top(n, side)");
        return NULL;
    }
    if (b->book != NULL)
        return PyObject_CallMethod(b->book, "top", "(OO)", args[0], args[1]);
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    int s = side_index(args[1]);
    if ((n == -1 && PyErr_Occurred()) || s < 0)
        return NULL;
    return row_top(&b->side[s], n);
}

static PyObject *fb_cut(FeedBook *b, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cut(side, depth)");
        return NULL;
    }
    if (b->book != NULL)
        return PyObject_CallMethod(b->book, "cut", "(OO)", args[0], args[1]);
    int s = side_index(args[0]);
    Py_ssize_t depth = PyLong_AsSsize_t(args[1]);
    if (s < 0 || (depth == -1 && PyErr_Occurred()))
        return NULL;
    Row *r = &b->side[s];
    Py_ssize_t extra = r->n - (depth < 0 ? 0 : depth);
    if (extra <= 0)
        return PyList_New(0);
    PyObject *out = PyList_New(extra); /* the worst first: the row's start */
    if (out == NULL)
        return NULL;
    for (Py_ssize_t ci = 0, i = 0; i < extra; ci++)
        for (Py_ssize_t j = 0; j < r->c[ci].n && i < extra; j++, i++) {
            PyObject *t = PyTuple_Pack(2, r->c[ci].v[j].px, r->c[ci].v[j].qty);
            if (t == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(out, i, t);
        }
    for (Py_ssize_t left = extra; left > 0;) {
        Chunk *c = &r->c[0];
        Py_ssize_t m = c->n < left ? c->n : left;
        for (Py_ssize_t j = 0; j < m; j++) {
            Py_DECREF(c->v[j].px);
            Py_DECREF(c->v[j].qty);
        }
        c->n -= m;
        r->n -= m;
        left -= m;
        if (c->n == 0)
            chunk_remove(r, 0);
        else
            memmove(c->v, c->v + m, (size_t)c->n * sizeof(Entry));
    }
    r->gen++;
    return out;
}

static PyObject *fb_best(FeedBook *b, int s)
{
    if (b->book != NULL)
        return PyObject_CallMethod(b->book, s ? "best_ask" : "best_bid", NULL);
    Entry *e = row_best(&b->side[s]);
    if (e == NULL)
        Py_RETURN_NONE;
    return PyTuple_Pack(2, e->px, e->qty);
}

static PyObject *fb_best_bid(FeedBook *b, PyObject *unused) { return fb_best(b, 0); }
static PyObject *fb_best_ask(FeedBook *b, PyObject *unused) { return fb_best(b, 1); }

static PyObject *fb_crossed_m(FeedBook *b, PyObject *unused)
{
    if (b->book != NULL)
        return PyObject_CallMethod(b->book, "crossed", NULL);
    return PyBool_FromLong(fb_crossed(b));
}

static PyObject *fb_depth(FeedBook *b, PyObject *side)
{
    if (b->book != NULL)
        return PyObject_CallMethod(b->book, "depth", "(O)", side);
    int s = side_index(side);
    return s < 0 ? NULL : PyLong_FromSsize_t(b->side[s].n);
}

/* Book.levels: every level, best first, as (px units, px, qty units, qty). */
static PyObject *fb_levels(FeedBook *b, PyObject *side)
{
    if (b->book != NULL)
        return PyObject_CallMethod(b->book, "levels", "(O)", side);
    int s = side_index(side);
    if (s < 0)
        return NULL;
    if (fo_own == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FeedBook.levels: 'own' is not registered");
        return NULL;
    }
    Row *r = &b->side[s];
    Py_ssize_t n = r->n;
    Entry *copy = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Entry)); /* own is Python code */
    if (copy == NULL)
        return PyErr_NoMemory();
    RowIt it;
    row_it(&it, r);
    for (Py_ssize_t i = 0; i < n; i++) {
        copy[i] = *row_next(&it);
        Py_INCREF(copy[i].px);
        Py_INCREF(copy[i].qty);
    }
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *k = long_of(copy[i].k), *px = copy[i].px, *q = copy[i].qty;
        PyObject *own = k == NULL ? NULL : PyObject_CallOneArg(fo_own, q);
        PyObject *t = (own == NULL || !PyTuple_Check(own) || PyTuple_GET_SIZE(own) < 1) ? NULL
                      : PyTuple_Pack(4, k, px, PyTuple_GET_ITEM(own, 0), q);
        if (t == NULL || append_new(out, t) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "own(qty) must give (units, decimals)");
            Py_CLEAR(out);
        }
        Py_XDECREF(k);
        Py_XDECREF(own);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(copy[i].px);
        Py_DECREF(copy[i].qty);
    }
    PyMem_Free(copy);
    return out;
}

/* " ".join of one column (0 px, 1 qty) of a row, best first. */
static PyObject *row_join(Row *r, int col)
{
    PyObject *parts = PyList_New(r->n);
    RowIt it;
    row_it(&it, r);
    for (Py_ssize_t i = 0; parts != NULL && i < r->n; i++) {
        Entry *e = row_next(&it);
        PyList_SET_ITEM(parts, i, Py_NewRef(col ? e->qty : e->px));
    }
    PyObject *out = parts == NULL ? NULL : PyUnicode_Join(fv_space, parts);
    Py_XDECREF(parts);
    return out;
}

/* Book.__getstate__'s form: the same tuple, so states compare and restore into a Book. */
static PyObject *fb_getstate(FeedBook *b, PyObject *unused)
{
    if (b->book != NULL)
        return PyObject_CallMethod(b->book, "__getstate__", NULL);
    PyObject *bp = row_join(&b->side[0], 0), *bq = row_join(&b->side[0], 1);
    PyObject *ap = row_join(&b->side[1], 0), *aq = row_join(&b->side[1], 1), *out = NULL;
    if (bp != NULL && bq != NULL && ap != NULL && aq != NULL)
        out = Py_BuildValue("(OOOOOOii)", bp, bq, ap, aq, b->seq, b->status, 0, 64);
    Py_XDECREF(bp);
    Py_XDECREF(bq);
    Py_XDECREF(ap);
    Py_XDECREF(aq);
    return out;
}

static PyObject *fb_reduce(FeedBook *b, PyObject *unused)
{
    PyErr_SetString(PyExc_TypeError, "a FeedBook is not pickled (a handler re-snapshots)");
    return NULL;
}

static PyObject *fb_get(FeedBook *b, void *which)
{
    const char *name = which;
    if (b->book != NULL)
        return PyObject_GetAttrString(b->book, name);
    return Py_NewRef(name[1] == 'e' ? b->seq : b->status); /* "seq" / "status" */
}

static int fb_set(FeedBook *b, PyObject *v, void *which)
{
    const char *name = which;
    if (v == NULL) {
        PyErr_Format(PyExc_AttributeError, "cannot delete %s", name);
        return -1;
    }
    if (b->book != NULL)
        return PyObject_SetAttrString(b->book, name, v);
    if (name[1] == 'e')
        Py_SETREF(b->seq, Py_NewRef(v));
    else
        Py_SETREF(b->status, Py_NewRef(v));
    return 0;
}

static PyObject *fb_max_levels(FeedBook *b, void *unused)
{
    return PyLong_FromLong(0);
}

static PyMethodDef fb_methods[] = {
    {"apply", (PyCFunction)fb_apply, METH_O, "Book.apply (snapshots and updates)."},
    {"top", (PyCFunction)(void (*)(void))fb_top, METH_FASTCALL, "Book.top(n, side)."},
    {"cut", (PyCFunction)(void (*)(void))fb_cut, METH_FASTCALL, "Book.cut(side, depth)."},
    {"best_bid", (PyCFunction)fb_best_bid, METH_NOARGS, "Book.best_bid()."},
    {"best_ask", (PyCFunction)fb_best_ask, METH_NOARGS, "Book.best_ask()."},
    {"crossed", (PyCFunction)fb_crossed_m, METH_NOARGS, "Book.crossed()."},
    {"depth", (PyCFunction)fb_depth, METH_O, "Book.depth(side)."},
    {"levels", (PyCFunction)fb_levels, METH_O, "Book.levels(side)."},
    {"__getstate__", (PyCFunction)fb_getstate, METH_NOARGS, "Book.__getstate__'s form."},
    {"__reduce__", (PyCFunction)fb_reduce, METH_NOARGS, "Not pickled."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fb_getset[] = {
    {"seq", (getter)fb_get, (setter)fb_set, "Book.seq", "seq"},
    {"status", (getter)fb_get, (setter)fb_set, "Book.status", "status"},
    {"max_levels", (getter)fb_max_levels, NULL, "always 0", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FeedBookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "operators._native.FeedBook",
    .tp_basicsize = sizeof(FeedBook),
    .tp_dealloc = (destructor)fb_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A feed handler's own order book in C (see _native.c, FeedBook).",
    .tp_methods = fb_methods,
    .tp_getset = fb_getset,
    .tp_new = fb_new,
};

/* -- Tally: the counters the compiled paths move, and the handler's containers ------------------
 * stats[name] += 1 on a dict of ints was three lookups and an int made per counter, a tenth of a
 * small frame. A handler keeps a Tally (Handler._tally) the compiled paths add to, and its
 * `stats` property adds it to a copy of the Python's counts when read. The Tally also holds the handler's books, _unsynced and _seq (bound once,
 * in Handler.__init__) and its exchange: found once per compiled call (state_of), where reading
 * each from the handler was a lookup in its type and then its dict, eight a Kraken frame. */
enum { T_EVENTS, T_BOOK_EVENTS, T_CHECKSUM_OK, T_CROSSED, T_RESYNCS, T_SLOTS };

enum { H_BOOKS, H_UNSYNCED, H_SEQS, H_EXCHANGE, H_ATTRS };

typedef struct {
    PyObject_HEAD
    long long n[T_SLOTS];
    PyObject *attr[H_ATTRS]; /* held; NULL: read from the handler */
} Tally;

static PyTypeObject TallyType;
static Tally *state_of(PyObject *h);

static PyObject *tally_name(int slot)
{
    PyObject *names[T_SLOTS] = {fs_events, fs_book_events, fs_checksum_ok, fs_crossed,
                                fs_resyncs};
    return names[slot];
}

/* stats[name] += by, for any mapping. */
static int stat_add(PyObject *stats, PyObject *name, long long by)
{
    PyObject *v = PyObject_GetItem(stats, name), *d = v == NULL ? NULL : PyLong_FromLongLong(by);
    PyObject *w = d == NULL ? NULL : PyNumber_Add(v, d);
    int rc = w == NULL ? -1 : PyObject_SetItem(stats, name, w);
    Py_XDECREF(v);
    Py_XDECREF(d);
    Py_XDECREF(w);
    return rc;
}

/* The handler's counter of slot moved by one: in its Tally, else (none) in its stats. */
static int count_one(PyObject *h, int slot)
{
    Tally *t = state_of(h);
    if (t != NULL) {
        t->n[slot]++;
        return 0;
    }
    if (PyErr_Occurred()) /* not an ordinary one: state_of kept it */
        return -1;
    PyObject *stats = PyObject_GetAttr(h, fa_stats);
    int rc = stats == NULL ? -1 : stat_add(stats, tally_name(slot), 1);
    Py_XDECREF(stats);
    return rc;
}

static PyObject *tally_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *names[] = {"books", "unsynced", "seqs", "exchange", NULL};
    PyObject *a[H_ATTRS] = {NULL, NULL, NULL, NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O!O!O!U:Tally", names, &PyDict_Type, &a[0],
                                     &PySet_Type, &a[1], &PyDict_Type, &a[2], &a[3]))
        return NULL;
    Tally *t = (Tally *)type->tp_alloc(type, 0);
    for (int i = 0; t != NULL && i < H_ATTRS; i++)
        t->attr[i] = Py_XNewRef(a[i]);
    return (PyObject *)t;
}

static int tally_traverse(Tally *t, visitproc visit, void *arg)
{
    for (int i = 0; i < H_ATTRS; i++)
        Py_VISIT(t->attr[i]);
    return 0;
}

static int tally_clear(Tally *t)
{
    for (int i = 0; i < H_ATTRS; i++)
        Py_CLEAR(t->attr[i]);
    return 0;
}

static void tally_dealloc(Tally *t)
{
    PyObject_GC_UnTrack(t);
    tally_clear(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* Tally.add_to(stats): every count added into the mapping (a copy of the handler's stats: a
 * read changes neither, so a reader on another thread cannot race the handler's increments). */
static PyObject *tally_add_to(Tally *t, PyObject *stats)
{
    for (int i = 0; i < T_SLOTS; i++)
        if (t->n[i] != 0 && stat_add(stats, tally_name(i), t->n[i]) < 0)
            return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef tally_methods[] = {
    {"add_to", (PyCFunction)tally_add_to, METH_O, "add_to(stats): the counts added into stats."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TallyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "operators._native.Tally",
    .tp_basicsize = sizeof(Tally),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Tally(books, unsynced, seqs, exchange): a handler's counters the compiled book\n"
              "frames move (added to its stats when read), and its containers they use.",
    .tp_methods = tally_methods,
    .tp_new = tally_new,
    .tp_traverse = (traverseproc)tally_traverse,
    .tp_clear = (inquiry)tally_clear,
    .tp_dealloc = (destructor)tally_dealloc,
};

/* The handler a compiled call runs for and its Tally (held, or NULL: none), found once per
 * call: set by the first state_of, cleared as each entry point starts and ends (ENTRY), so a
 * handler whose frame a Python callback runs meanwhile finds its own. */
static struct {
    PyObject *h;
    PyObject *t;
} cur_state;

static void state_clear(void)
{
    PyObject *t = cur_state.t;
    cur_state.h = NULL;
    cur_state.t = NULL;
    Py_XDECREF(t);
}

static Tally *state_of(PyObject *h)
{
    if (cur_state.h == h)
        return (Tally *)cur_state.t;
    PyObject *t = PyObject_GetAttr(h, fa_tally);
    if (t == NULL || Py_TYPE(t) != &TallyType) {
        Py_XDECREF(t);
        clear_ordinary();
        t = NULL;
    }
    state_clear();
    cur_state.h = h;
    cur_state.t = t;
    return (Tally *)t;
}

/* A compiled entry point: name##_run between two state_clear()s. */
#define ENTRY(name)                                                                  \
    static PyObject *name(PyObject *self, PyObject *const *args, Py_ssize_t nargs)  \
    {                                                                                \
        state_clear();                                                               \
        PyObject *r = name##_run(self, args, nargs);                                 \
        state_clear();                                                               \
        return r;                                                                    \
    }

/* handler.books, ._unsynced, ._seq or .exchange: from its Tally where it holds them. A new
 * reference, or NULL with an exception. */
static PyObject *handler_attr(PyObject *h, int which)
{
    Tally *t = state_of(h);
    if (t != NULL && t->attr[which] != NULL)
        return Py_NewRef(t->attr[which]);
    if (PyErr_Occurred()) /* not an ordinary one: state_of kept it */
        return NULL;
    PyObject *names[H_ATTRS] = {fa_books, fa_unsynced, fa_seqs, fa_exchange};
    return PyObject_GetAttr(h, names[which]);
}

/* Handler._lose_sync */
static int lose_sync(PyObject *h, PyObject *sym)
{
    PyObject *unsynced = handler_attr(h, H_UNSYNCED);
    if (unsynced == NULL)
        return -1;
    int has = PySequence_Contains(unsynced, sym), rc = has < 0 ? -1 : 0;
    if (has == 0) {
        PyObject *r = PyObject_CallMethod(unsynced, "add", "(O)", sym);
        rc = (r == NULL || count_one(h, T_RESYNCS) < 0) ? -1 : 0;
        Py_XDECREF(r);
    }
    Py_DECREF(unsynced);
    return rc;
}

/* The handler's book of sym if it is in sync (known, not waiting for a snapshot): a new
 * reference; NULL without an exception where it is not (the Python decides). */
static PyObject *synced_book(PyObject *h, PyObject *sym)
{
    PyObject *books = handler_attr(h, H_BOOKS), *unsynced = NULL, *book = NULL;
    if (books == NULL || !PyDict_CheckExact(books))
        goto done;
    unsynced = handler_attr(h, H_UNSYNCED);
    if (unsynced == NULL || !PyAnySet_CheckExact(unsynced))
        goto done;
    int waiting = PySet_Contains(unsynced, sym);
    if (waiting != 0)
        goto done;
    book = PyDict_GetItemWithError(books, sym);
    Py_XINCREF(book);
done:
    Py_XDECREF(books);
    Py_XDECREF(unsynced);
    clear_ordinary();
    return book;
}

/* Handler._next without storing it: the handler's next number of sym, if a plain one. */
static int next_number(PyObject *h, PyObject *sym, long long *out)
{
    PyObject *seqs = handler_attr(h, H_SEQS), *cur = NULL;
    int ok = 0;
    if (seqs != NULL && PyDict_CheckExact(seqs)) {
        cur = PyDict_GetItemWithError(seqs, sym);
        cur = cur != NULL ? Py_NewRef(cur) : PyErr_Occurred() ? NULL
                                                              : PyObject_GetAttr(h, fa_seq_base);
        long long v;
        if (int_in(cur, -1, MAX_INT_LL - 1, &v)) {
            *out = v + 1;
            ok = 1;
        }
    }
    Py_XDECREF(seqs);
    Py_XDECREF(cur);
    clear_ordinary();
    return ok;
}

/* Whether FeedBook.apply of an update (seq, prev_seq: prev, checked where has_prev) is sure to
 * answer "applied": book a FeedBook (not become a Book) with an int seq >= 0 below seq (prev
 * equal to it), not stale. 1 yes, 0 the Python decides. */
static int book_ready(PyObject *book, long long seq, long long prev, int has_prev)
{
    if (Py_TYPE(book) != &FeedBookType || ((FeedBook *)book)->book != NULL)
        return 0;
    FeedBook *b = (FeedBook *)book;
    long long cur;
    return int_in(b->seq, 0, LLONG_MAX, &cur) && PyUnicode_CheckExact(b->status) &&
           PyUnicode_Compare(b->status, fv_stale) != 0 && !PyErr_Occurred() && seq > cur &&
           (!has_prev || prev == cur);
}

/* An update's levels applied to a side of a ready FeedBook. */
static int rows_set(FeedBook *b, int s, Lvs *l)
{
    for (Py_ssize_t i = 0; i < l->n; i++)
        if (row_set(&b->side[s], s, l->v[i].k, l->v[i].nonzero, l->v[i].px, l->v[i].qty) < 0)
            return -1;
    return 0;
}

/* A new dict sized for a book update's keys (built key by key it resized twice). */
static PyObject *new_event(int checked)
{
#if PY_VERSION_HEX < 0x030E0000
    return _PyDict_NewPresized(10 + checked);
#else
    return PyDict_New();
#endif
}

/* The rest of Handler._book_event and Book.apply once book_ready said "applied": the event
 * dict built (canonical key order), the levels applied, the book's seq and status set, the
 * counters moved. A new reference to the dict. */
static PyObject *commit_update(PyObject *h, PyObject *book, PyObject *sym, PyObject *ts,
                               PyObject *rts, long long seq, long long prev, PyObject *bids,
                               PyObject *asks, PyObject *checksum, Lvs *lb, Lvs *la)
{
    PyObject *d = NULL, *ex = NULL, *seq_o = NULL, *prev_o = NULL;
    FeedBook *fb = (FeedBook *)book;
    int crossed;
    if ((ex = handler_attr(h, H_EXCHANGE)) == NULL ||
        (seq_o = PyLong_FromLongLong(seq)) == NULL ||
        (prev_o = PyLong_FromLongLong(prev)) == NULL || (d = new_event(checksum != NULL)) == NULL)
        goto error;
    if (PyDict_SetItem(d, fk_type, fv_book) < 0 || PyDict_SetItem(d, fk_ex, ex) < 0 ||
        PyDict_SetItem(d, fk_sym, sym) < 0 || PyDict_SetItem(d, fk_ts, ts) < 0 ||
        PyDict_SetItem(d, fk_rts, rts) < 0 || PyDict_SetItem(d, fk_action, fv_update) < 0 ||
        PyDict_SetItem(d, fk_seq, seq_o) < 0 || PyDict_SetItem(d, fk_prev_seq, prev_o) < 0 ||
        PyDict_SetItem(d, fk_bids, bids) < 0 || PyDict_SetItem(d, fk_asks, asks) < 0 ||
        (checksum != NULL && PyDict_SetItem(d, fk_checksum, checksum) < 0))
        goto error;
    if (fb->book != NULL) { /* only code run by the attribute reads above could have done it */
        PyErr_SetString(PyExc_RuntimeError, "FeedBook: became a Book during a compiled frame");
        goto error;
    }
    if (rows_set(fb, 0, lb) < 0 || rows_set(fb, 1, la) < 0)
        goto error;
    Py_SETREF(fb->seq, Py_NewRef(seq_o));
    crossed = fb_crossed(fb);
    Py_SETREF(fb->status, Py_NewRef(crossed ? fv_crossed : fv_ok));
    if (crossed && (count_one(h, T_CROSSED) < 0 || lose_sync(h, sym) < 0))
        goto error;
    if (count_one(h, T_BOOK_EVENTS) < 0 || count_one(h, T_EVENTS) < 0)
        goto error;
    goto done;
error:
    Py_CLEAR(d);
done:
    Py_XDECREF(ex);
    Py_XDECREF(seq_o);
    Py_XDECREF(prev_o);
    return d;
}

/* The answers of valid_key and of the symbol functions, kept here (a Python call each was a
 * tenth of a small frame): cleared when large, as the functions' own lru caches. */
static PyObject *answers;

/* table[key]: a dict made and stored there if missing (borrowed); NULL with an exception. */
static PyObject *subtable(PyObject *table, PyObject *key)
{
    PyObject *sub = PyDict_GetItemWithError(table, key);
    if (sub != NULL || PyErr_Occurred())
        return sub;
    if ((sub = PyDict_New()) == NULL)
        return NULL;
    int rc = PyDict_SetItem(table, key, sub);
    Py_DECREF(sub); /* the table holds it */
    return rc < 0 ? NULL : sub;
}

/* fn(a) or fn(a, b) (exact strs), answered from answers[fn][a] or answers[fn][a][b] when
 * asked before: a new reference; NULL with an exception where fn raised (not kept). */
static PyObject *answer(PyObject *fn, PyObject *a, PyObject *b)
{
    if (answers == NULL && (answers = PyDict_New()) == NULL)
        return NULL;
    PyObject *table = subtable(answers, fn);
    if (table != NULL && b != NULL)
        table = subtable(table, a);
    if (table == NULL)
        return NULL;
    PyObject *key = b != NULL ? b : a, *r = PyDict_GetItemWithError(table, key);
    if (r != NULL || PyErr_Occurred())
        return Py_XNewRef(r);
    Py_INCREF(table); /* fn is Python code: hold what it could clear */
    r = PyObject_CallFunctionObjArgs(fn, a, b, NULL);
    if (r != NULL && PyDict_GET_SIZE(table) >= 4096)
        PyDict_Clear(table);
    if (r != NULL && PyDict_SetItem(table, key, r) < 0)
        Py_CLEAR(r);
    Py_DECREF(table);
    return r;
}

/* valid_key(handler.exchange, sym), plainly: 1, else 0 (the Python decides). */
static int key_valid(PyObject *h, PyObject *sym)
{
    if (fo_valid_key == NULL)
        return 0;
    PyObject *ex = handler_attr(h, H_EXCHANGE), *r = NULL;
    if (ex != NULL && PyUnicode_CheckExact(ex))
        r = answer(fo_valid_key, ex, sym);
    int ok = r == Py_True;
    Py_XDECREF(ex);
    Py_XDECREF(r);
    clear_ordinary();
    return ok;
}

/* fn(native) for a symbol function (to_symbol, kraken_symbol): a new reference, or NULL without
 * an exception where it refuses (the Python then words the dead letter). */
static PyObject *symbol_of(PyObject *fn, PyObject *native)
{
    if (fn == NULL || !PyUnicode_CheckExact(native))
        return NULL;
    PyObject *sym = answer(fn, native, NULL);
    if (sym == NULL || !PyUnicode_CheckExact(sym)) {
        Py_XDECREF(sym);
        clear_ordinary();
        return NULL;
    }
    return sym;
}

/* A frame's symbol, known valid: symbol_of and then key_valid made a str of the native symbol,
 * hashed it and looked it up in three dicts a frame. Their answers for (the symbol function,
 * valid_key, the exchange, the native text) are kept in a small table of the last ones. */
typedef struct {
    PyObject *fn, *valid, *ex, *sym; /* held */
    Py_ssize_t n;
    char text[32];
} SymSlot;
#define NSYMS 64
static SymSlot sym_slots[NSYMS];

static void sym_slots_clear(void)
{
    for (int i = 0; i < NSYMS; i++) {
        SymSlot old = sym_slots[i];
        memset(&sym_slots[i], 0, sizeof(SymSlot)); /* emptied before anything is released */
        Py_XDECREF(old.fn);
        Py_XDECREF(old.valid);
        Py_XDECREF(old.ex);
        Py_XDECREF(old.sym);
    }
}

/* fn's symbol (to_symbol, kraken_symbol) of the native symbol [p, p + n) (ASCII), where
 * valid_key(handler.exchange, it) holds: a new reference; NULL without an exception where not
 * plainly so (the Python decides), with one on an error that must propagate. */
static PyObject *valid_symbol_text(PyObject *h, PyObject *fn, const char *p, Py_ssize_t n)
{
    if (fn == NULL || fo_valid_key == NULL)
        return NULL;
    PyObject *ex = handler_attr(h, H_EXCHANGE), *native = NULL, *sym = NULL, *ok = NULL;
    if (ex == NULL || !PyUnicode_CheckExact(ex))
        goto done;
    uint32_t x = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++)
        x = (x ^ (unsigned char)p[i]) * 16777619u;
    SymSlot *slot = &sym_slots[(x ^ (uint32_t)((uintptr_t)fn >> 4)) % NSYMS];
    if (slot->fn == fn && slot->valid == fo_valid_key && slot->ex == ex && slot->n == n &&
        memcmp(slot->text, p, (size_t)n) == 0) {
        sym = Py_NewRef(slot->sym);
        goto done;
    }
    if ((native = ascii_str(p, n)) == NULL || (sym = symbol_of(fn, native)) == NULL)
        goto done;
    ok = answer(fo_valid_key, ex, sym);
    if (ok != Py_True) {
        Py_CLEAR(sym);
        goto done;
    }
    if (n <= (Py_ssize_t)sizeof(slot->text)) { /* kept: the new ones set before the old go */
        PyObject *old[4] = {slot->fn, slot->valid, slot->ex, slot->sym};
        slot->fn = Py_NewRef(fn);
        slot->valid = Py_NewRef(fo_valid_key);
        slot->ex = Py_NewRef(ex);
        slot->sym = Py_NewRef(sym);
        slot->n = n;
        memcpy(slot->text, p, (size_t)n);
        for (int i = 0; i < 4; i++)
            Py_XDECREF(old[i]);
    }
done:
    Py_XDECREF(ex);
    Py_XDECREF(native);
    Py_XDECREF(ok);
    if (sym == NULL)
        clear_ordinary();
    return sym;
}

/* valid_symbol_text of a native symbol str (symbol_of and key_valid where not plain ASCII). */
static PyObject *valid_symbol(PyObject *h, PyObject *fn, PyObject *native)
{
    if (plain_ascii(native))
        return valid_symbol_text(h, fn, (const char *)PyUnicode_DATA(native),
                                 PyUnicode_GET_LENGTH(native));
    PyObject *sym = symbol_of(fn, native);
    if (sym != NULL && !key_valid(h, sym))
        Py_CLEAR(sym);
    return sym;
}

/* The handler's number for sym stored (Handler._next's side effect). */
static int store_number(PyObject *h, PyObject *sym, long long seq)
{
    PyObject *seqs = handler_attr(h, H_SEQS), *v = PyLong_FromLongLong(seq);
    int rc = (seqs == NULL || v == NULL) ? -1 : PyObject_SetItem(seqs, sym, v);
    Py_XDECREF(seqs);
    Py_XDECREF(v);
    return rc;
}

/* A one-element list of a new reference (NULL passes through). */
static PyObject *list_of(PyObject *d)
{
    if (d == NULL)
        return NULL;
    PyObject *out = PyList_New(1);
    if (out == NULL) {
        Py_DECREF(d);
        return NULL;
    }
    PyList_SET_ITEM(out, 0, d);
    return out;
}

/* The checksum step after an applied update: crc (a new reference: the book's own) equal to
 * theirs -> checksum_ok counted, [d]; else handler._checksum_bad(sym, d, numbered). */
static PyObject *checksum_step(PyObject *h, PyObject *sym, PyObject *d, PyObject *crc,
                               PyObject *theirs, int numbered)
{
    PyObject *out = NULL;
    int same = crc == NULL ? -1 : PyObject_RichCompareBool(crc, theirs, Py_EQ);
    Py_XDECREF(crc);
    if (same < 0)
        goto done;
    if (same) {
        if (count_one(h, T_CHECKSUM_OK) < 0)
            goto done;
        out = list_of(Py_NewRef(d));
    } else {
        out = PyObject_CallMethodObjArgs(h, fa_checksum_bad, sym, d,
                                         numbered ? Py_True : Py_False, NULL);
    }
done:
    return out;
}

/* A checksum's input text, built from the book's strings (no Python string is made). */
typedef struct {
    size_t n;
    unsigned char buf[16384]; /* 50 levels of two 100-character decimals and their colons */
} CrcText;

static CrcText crc_input;

/* Kraken's digits of a decimal (no point, no leading zeros) written at out: their count. */
static Py_ssize_t kraken_digits(const char *s, Py_ssize_t n, unsigned char *out)
{
    Py_ssize_t i = 0, k = 0;
    while (i < n && (s[i] == '0' || s[i] == '.'))
        i++;
    for (; i < n; i++) { /* branch-free: a point is written, then written over */
        out[k] = (unsigned char)s[i];
        k += s[i] != '.';
    }
    return k;
}

/* An entry's part of the checksum text, Kraken's (mode 1: digits of px, digits of qty) or
 * OKX's (mode 2: "px:qty"), from the book's cache of them (a checksum re-reads the same 20 or 50
 * levels after every update, and most did not change): the slot holding it, or NULL with *rc 0
 * (not plain ASCII strings: the caller asks the Python reference) or -1 (error). */
static Frag *frag_of(FeedBook *b, Entry *e, int mode, int *rc)
{
    uintptr_t h = ((uintptr_t)e->px >> 4) ^ (((uintptr_t)e->qty >> 4) * 31);
    Frag *f = &b->frags[(h ^ (h >> 7)) % NFRAGS];
    if (f->px == e->px && f->qty == e->qty)
        return f;
    *rc = 0;
    if (!plain_ascii(e->px) || !plain_ascii(e->qty))
        return NULL;
    const char *p = (const char *)PyUnicode_DATA(e->px), *q = (const char *)PyUnicode_DATA(e->qty);
    Py_ssize_t pn = PyUnicode_GET_LENGTH(e->px), qn = PyUnicode_GET_LENGTH(e->qty);
    unsigned char *buf = PyMem_Realloc(f->frag, (size_t)(pn + qn + 1));
    if (buf == NULL) {
        PyErr_NoMemory();
        *rc = -1;
        return NULL;
    }
    f->frag = buf;
    if (mode == 1) {
        f->n = kraken_digits(p, pn, buf);
        f->n += kraken_digits(q, qn, buf + f->n);
    } else {
        memcpy(buf, p, (size_t)pn);
        buf[pn] = ':';
        memcpy(buf + pn + 1, q, (size_t)qn);
        f->n = pn + 1 + qn;
    }
    Py_XSETREF(f->px, Py_NewRef(e->px));
    Py_XSETREF(f->qty, Py_NewRef(e->qty));
    return f;
}

/* An entry's part of OKX's checksum text appended to t, after a ':' where t is not empty. */
static int crc_level(CrcText *t, FeedBook *b, Entry *e)
{
    int rc;
    Frag *f = frag_of(b, e, 2, &rc);
    if (f == NULL)
        return rc;
    if (t->n + (size_t)f->n + 1 > sizeof(t->buf))
        return 0;
    if (t->n)
        t->buf[t->n++] = ':';
    memcpy(t->buf + t->n, f->frag, (size_t)f->n);
    t->n += (size_t)f->n;
    return 1;
}

/* Side s's part of Kraken's checksum text (its best 10 levels' fragments, best first), rebuilt
 * only where the row changed since; the asks' running CRC with it. 1, or as crc_level: 0 (not
 * plain: the caller asks the Python reference), -1 error. */
static int side_text(FeedBook *b, int s)
{
    SideText *st = &b->text[s];
    Row *r = &b->side[s];
    if (st->valid && st->gen == r->gen)
        return 1;
    RowIt it;
    row_it(&it, r);
    int want = r->n < 10 ? (int)r->n : 10, p = 0;
    Entry *e = NULL;
    if (st->valid) /* the levels still where they were (the same strings): their text kept */
        for (; p < want && p < st->levels; p++) {
            e = row_next(&it);
            if (e->px != st->px[p] || e->qty != st->qty[p])
                break;
            e = NULL;
        }
    st->valid = 0;
    st->n = p > 0 ? st->end[p - 1] : 0;
    uint32_t crc = p > 0 ? st->at[p - 1] : 0xFFFFFFFFu;
    for (int i = p; i < want; i++, e = NULL) {
        int rc;
        Entry *x = e != NULL ? e : row_next(&it);
        Frag *f = frag_of(b, x, 1, &rc);
        if (f == NULL)
            return rc;
        if (st->n + (size_t)f->n > st->cap) {
            size_t cap = 2 * (st->n + (size_t)f->n) + 256;
            unsigned char *buf = PyMem_Realloc(st->buf, cap);
            if (buf == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            st->buf = buf;
            st->cap = cap;
        }
        memcpy(st->buf + st->n, f->frag, (size_t)f->n);
        st->n += (size_t)f->n;
        st->end[i] = st->n;
        if (s == 1) /* the asks come first: their running CRC kept level by level */
            st->at[i] = crc = crc_bytes(crc, f->frag, (size_t)f->n);
        Py_XSETREF(st->px[i], Py_NewRef(x->px));
        Py_XSETREF(st->qty[i], Py_NewRef(x->qty));
    }
    for (int i = want; i < 10; i++) {
        Py_CLEAR(st->px[i]);
        Py_CLEAR(st->qty[i]);
    }
    st->levels = want;
    st->crc = crc;
    st->gen = r->gen;
    st->valid = 1;
    return 1;
}

/* The checksum of a FeedBook's top: Kraken's (okx 0: the best 10 asks then 10 bids, digits
 * only, unsigned) or OKX's (okx 1: 25 bids and asks interleaved, ':'-joined, signed), as
 * kraken_crc/okx_crc of its top(n). A new reference; None where a level is not a plain pair of
 * strings (the caller asks the Python reference). */
static PyObject *book_crc(PyObject *book, int okx)
{
    FeedBook *b = (FeedBook *)book;
    Row *bids = &b->side[0], *asks = &b->side[1];
    int mode = okx ? 2 : 1;
    if (b->book != NULL) /* became a Book meanwhile: the Python reference reads it */
        Py_RETURN_NONE;
    if (b->frag_mode != mode) /* fragments of the other checksum: none kept */
        frags_clear(b);
    if (b->frags == NULL) {
        if ((b->frags = PyMem_Calloc(NFRAGS, sizeof(Frag))) == NULL)
            return PyErr_NoMemory();
        b->frag_mode = mode;
    }
    if (!okx) { /* asks then bids: each side's part kept until its row changes */
        int rc = side_text(b, 1);
        if (rc > 0)
            rc = side_text(b, 0);
        if (rc <= 0)
            return rc < 0 ? NULL : Py_NewRef(Py_None);
        uint32_t crc = crc_bytes(b->text[1].crc, b->text[0].buf, b->text[0].n) ^ 0xFFFFFFFFu;
        return PyLong_FromUnsignedLong(crc);
    }
    CrcText *t = &crc_input; /* no Python code runs while it is written: the GIL keeps it ours */
    t->n = 0;
    int rc = 1;
    RowIt ib, ia;
    row_it(&ib, bids);
    row_it(&ia, asks);
    for (Py_ssize_t i = 0; i < 25 && rc > 0; i++) { /* OKX: bids and asks interleaved */
        Entry *e = i < bids->n ? row_next(&ib) : NULL;
        if (e != NULL)
            rc = crc_level(t, b, e);
        if (rc > 0 && (e = i < asks->n ? row_next(&ia) : NULL) != NULL)
            rc = crc_level(t, b, e);
    }
    if (rc <= 0)
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    uint32_t crc = crc_bytes(0xFFFFFFFFu, t->buf, t->n) ^ 0xFFFFFFFFu;
    return PyLong_FromLongLong(crc & 0x80000000u ? (long long)crc - 0x100000000LL
                                                 : (long long)crc);
}

/* book_crc, or the Python reference (fn: kraken_checksum_py(asks, bids) or
 * okx_checksum_py(bids, asks) of the sides' top(n)) where a level is not plain. */
static PyObject *book_checksum(PyObject *book, int okx)
{
    PyObject *crc = book_crc(book, okx);
    if (crc != Py_None)
        return crc;
    Py_DECREF(crc);
    PyObject *fn = okx ? fo_okx_py : fo_kraken_py;
    if (fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the checksum's reference is not registered");
        return NULL;
    }
    PyObject *first = PyObject_CallMethod(book, "top", "is", okx ? 25 : 10, okx ? "bids" : "asks");
    PyObject *second = first == NULL ? NULL : PyObject_CallMethod(book, "top", "is", okx ? 25 : 10,
                                                                  okx ? "asks" : "bids");
    PyObject *r = second == NULL ? NULL : PyObject_CallFunctionObjArgs(fn, first, second, NULL);
    Py_XDECREF(first);
    Py_XDECREF(second);
    return r;
}

/* Arguments (handler, msg, rts), rts plainly a time: 1, else 0 (the Python decides); -1 error. */
static int frame_args(const char *name, PyObject *const *args, Py_ssize_t nargs)
{
    long long v;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s(handler, msg, rts)", name);
        return -1;
    }
    return int_in(args[2], 0, MAX_TS_LL, &v);
}

/* The rest of kraken_frame (and kraken_raw) once the frame was read: the update of sym's
 * synced book, its levels (lb, la) parsed from the emitted bids and asks, ts the newest level
 * time, ck_o the checksum sent (or NULL). A new reference: [events], None (the Python decides)
 * or NULL. */
static PyObject *kraken_update(PyObject *h, PyObject *rts, PyObject *sym, PyObject *book,
                               PyObject *depth_o, long long depth, PyObject *bids, PyObject *asks,
                               Lvs *lb, Lvs *la, long long ts, PyObject *ck_o)
{
    PyObject *out = NULL, *ts_o = NULL;
    long long seq;
    if (ts > MAX_TS_LL || fo_kraken_py == NULL ||
        !next_number(h, sym, &seq) ||
        !book_ready(book, seq, 0, 0))
        goto python;
    long long prev;
    if (!int_in(((FeedBook *)book)->seq, 0, LLONG_MAX, &prev)) /* book_ready read it */
        goto python;
    /* Committed from here on: as the Python path, which has changed state by now too. */
    if ((ts_o = PyLong_FromLongLong(ts)) == NULL || store_number(h, sym, seq) < 0)
        goto done;
    PyObject *d = commit_update(h, book, sym, ts_o, rts, seq, prev, bids, asks, ck_o, lb, la);
    if (d == NULL)
        goto done;
    for (int side = 0; side < 2; side++) { /* _truncate: cut to the subscribed depth */
        if (((FeedBook *)book)->book == NULL && ((FeedBook *)book)->side[side].n <= depth)
            continue;
        PyObject *r = PyObject_CallMethodObjArgs(h, fa_truncate, book, d, depth_o, NULL);
        if (r == NULL) {
            Py_DECREF(d);
            goto done;
        }
        Py_DECREF(r);
        break;
    }
    if (ck_o == NULL) {
        out = list_of(d);
        goto done;
    }
    PyObject *crc = book_checksum(book, 0);
    out = crc == NULL ? NULL : checksum_step(h, sym, d, crc, ck_o, 1);
    Py_DECREF(d);
    goto done;
python:
    if (!PyErr_Occurred())
        out = Py_NewRef(Py_None);
done:
    Py_XDECREF(ts_o);
    return out;
}

PyDoc_STRVAR(kraken_frame_doc,
"kraken_frame(handler, msg, rts) -> list | None: a Kraken v1 book update, as\n"
"KrakenHandler._on_message; None (nothing changed) for anything else.");

static PyObject *kraken_frame_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = frame_args("kraken_frame", args, nargs);
    if (ready <= 0)
        return ready < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *h = args[0], *msg = args[1], *rts = args[2];
    if (!PyList_CheckExact(msg) || PyList_GET_SIZE(msg) < 4)
        Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(msg);
    PyObject *channel = PyList_GET_ITEM(msg, n - 2), *first = PyList_GET_ITEM(msg, 1);
    if (!starts_with(channel, "book") || !PyDict_CheckExact(first))
        Py_RETURN_NONE;
    int snap = PyDict_Contains(first, fm_as);
    if (snap == 0)
        snap = PyDict_Contains(first, fm_bs);
    if (snap != 0)
        return snap < 0 ? NULL : Py_NewRef(Py_None);
    long long depth;
    PyObject *depth_o = kraken_depth(h, (const char *)PyUnicode_DATA(channel),
                                     PyUnicode_GET_LENGTH(channel), &depth);
    if (depth_o == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    PyObject *sym = NULL, *book = NULL, *bids = NULL, *asks = NULL, *ts_o = NULL, *out = NULL;
    PyObject *check = NULL, *ck_o = NULL;
    Lvs lb, la;
    lvs_init(&lb);
    lvs_init(&la);
    if (depth_o == NULL)
        goto done;
    if ((sym = valid_symbol(h, fo_kraken_symbol, PyList_GET_ITEM(msg, n - 1))) == NULL ||
        (book = synced_book(h, sym)) == NULL) {
        out = PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        goto done;
    }
    if ((bids = PyList_New(0)) == NULL || (asks = PyList_New(0)) == NULL)
        goto done;
    long long ts = 0, t, ck = 0;
    for (Py_ssize_t i = 1; i < n - 2; i++) {
        PyObject *p = PyList_GET_ITEM(msg, i);
        if (!PyDict_CheckExact(p))
            goto python;
        for (int side = 0; side < 2; side++) {
            PyObject *lvs = PyDict_GetItemWithError(p, side ? fm_a : fm_b);
            if (lvs == NULL) {
                if (PyErr_Occurred())
                    goto done;
                continue;
            }
            if (!PyList_CheckExact(lvs))
                goto python;
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(lvs); j++) {
                PyObject *lv = PyList_GET_ITEM(lvs, j);
                if (!PyList_CheckExact(lv) || PyList_GET_SIZE(lv) < 3 ||
                    !sec_ms(PyList_GET_ITEM(lv, 2), &t))
                    goto python;
                int rc = pair_into(side ? asks : bids, side ? &la : &lb, PyList_GET_ITEM(lv, 0),
                                   PyList_GET_ITEM(lv, 1));
                if (rc <= 0) {
                    if (rc < 0)
                        goto done;
                    goto python;
                }
                if (t > ts)
                    ts = t;
            }
        }
        PyObject *c = PyDict_GetItemWithError(p, fm_c); /* checksum = p.get("c", checksum) */
        if (c == NULL && PyErr_Occurred())
            goto done;
        if (c != NULL)
            Py_XSETREF(check, Py_NewRef(c));
    }
    if (check != NULL && check != Py_None) {
        if (!digits_of(check, 18, &ck) || (ck_o = PyLong_FromLongLong(ck)) == NULL)
            goto python_or_error;
    }
    out = kraken_update(h, rts, sym, book, depth_o, depth, bids, asks, &lb, &la, ts, ck_o);
    goto done;
python_or_error:
python:
    if (!PyErr_Occurred())
        out = Py_NewRef(Py_None);
done:
    lvs_free(&lb);
    lvs_free(&la);
    Py_XDECREF(depth_o);
    Py_XDECREF(sym);
    Py_XDECREF(book);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    Py_XDECREF(ts_o);
    Py_XDECREF(check);
    Py_XDECREF(ck_o);
    return out;
}
ENTRY(kraken_frame)

/* The rest of coinbase_frame (and coinbase_raw) once the frame was read: the update of sym's
 * synced book, numbered by the handler, its levels (lb, la) parsed from the emitted bids and
 * asks. A new reference: [event], None (the Python decides) or NULL. */
static PyObject *coinbase_update(PyObject *h, PyObject *rts, PyObject *sym, PyObject *book,
                                 long long ts, PyObject *bids, PyObject *asks, Lvs *lb, Lvs *la)
{
    long long seq, prev;
    PyObject *ts_o;
    if (!next_number(h, sym, &seq) || !book_ready(book, seq, 0, 0) ||
        !int_in(((FeedBook *)book)->seq, 0, LLONG_MAX, &prev)) /* book_ready read it */
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if ((ts_o = PyLong_FromLongLong(ts)) == NULL || store_number(h, sym, seq) < 0) {
        Py_XDECREF(ts_o);
        return NULL;
    }
    PyObject *out = list_of(commit_update(h, book, sym, ts_o, rts, seq, prev, bids, asks, NULL,
                                          lb, la));
    Py_DECREF(ts_o);
    return out;
}

PyDoc_STRVAR(coinbase_frame_doc,
"coinbase_frame(handler, msg, rts) -> list | None: a Coinbase Exchange l2update, as\n"
"CoinbaseHandler._on_message; None (nothing changed) for anything else.");

static PyObject *coinbase_frame_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = frame_args("coinbase_frame", args, nargs);
    if (ready <= 0)
        return ready < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *h = args[0], *msg = args[1], *rts = args[2];
    if (!PyDict_CheckExact(msg))
        Py_RETURN_NONE;
    int adv = PyDict_Contains(msg, fm_channel);
    if (adv != 0)
        return adv < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *kind = PyDict_GetItemWithError(msg, fk_type);
    PyObject *changes = kind == NULL ? NULL : PyDict_GetItemWithError(msg, fm_changes);
    PyObject *time = changes == NULL ? NULL : PyDict_GetItemWithError(msg, fm_time);
    PyObject *pid = time == NULL ? NULL : PyDict_GetItemWithError(msg, fm_product_id);
    if (pid == NULL || PyErr_Occurred())
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    long long ts;
    if (!text_is(kind, "l2update") || !PyList_CheckExact(changes) || !iso_ms(time, &ts) ||
        ts < 0 || ts > MAX_TS_LL)
        Py_RETURN_NONE;
    PyObject *sym = NULL, *book = NULL, *bids = NULL, *asks = NULL, *out = NULL;
    Lvs lb, la;
    lvs_init(&lb);
    lvs_init(&la);
    if ((sym = valid_symbol(h, fo_to_symbol, pid)) == NULL || (book = synced_book(h, sym)) == NULL)
        goto python;
    if ((bids = PyList_New(0)) == NULL || (asks = PyList_New(0)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(changes); i++) {
        PyObject *c = PyList_GET_ITEM(changes, i);
        if (!PyList_CheckExact(c) || PyList_GET_SIZE(c) != 3)
            goto python;
        PyObject *side = PyList_GET_ITEM(c, 0);
        int buy = text_is(side, "buy");
        if (!buy && !text_is(side, "sell"))
            goto python;
        int rc = pair_into(buy ? bids : asks, buy ? &lb : &la, PyList_GET_ITEM(c, 1),
                           PyList_GET_ITEM(c, 2));
        if (rc < 0)
            goto done;
        if (rc == 0)
            goto python;
    }
    out = coinbase_update(h, rts, sym, book, ts, bids, asks, &lb, &la);
    goto done;
python:
    if (!PyErr_Occurred())
        out = Py_NewRef(Py_None);
done:
    lvs_free(&lb);
    lvs_free(&la);
    Py_XDECREF(sym);
    Py_XDECREF(book);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    return out;
}
ENTRY(coinbase_frame)

/* -- a Coinbase l2update read from its text -------------------------------------------------
 * Decoding a small frame was a third of its time: orjson builds a dict, a list of lists and five
 * strings that the handler reads once. coinbase_raw scans the text of the one frame shape that
 * matters, {"type":"l2update","product_id":...,"changes":[[side,px,qty],...],"time":...} (keys
 * in any order), building only the strings the event keeps, then goes on as coinbase_frame does.
 * Any other text (another key, a repeated one, whitespace, an escape, a control character,
 * non-ASCII, a number where a string goes) answers None before anything changed and the frame
 * is decoded as before: within what it takes, orjson would read exactly these values. */
typedef struct {
    const char *p, *end;
} Scan;

/* A JSON string without escapes, control characters or non-ASCII bytes: its span. */
static int scan_str(Scan *s, const char **start, Py_ssize_t *n)
{
    if (s->p >= s->end || *s->p != '"')
        return 0;
    const char *q = ++s->p;
    for (; s->p < s->end; s->p++) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            *start = q;
            *n = s->p++ - q;
            return 1;
        }
        if (c == '\\' || c < 0x20 || c >= 0x80)
            return 0;
    }
    return 0;
}

static int scan_ch(Scan *s, char c)
{
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

/* A frame's text to scan: an ASCII str or bytes (scan_str refuses non-ASCII bytes). */
static int raw_text(PyObject *raw, Scan *sc)
{
    if (PyUnicode_CheckExact(raw) && PyUnicode_IS_COMPACT_ASCII(raw)) {
        sc->p = (const char *)PyUnicode_DATA(raw);
        sc->end = sc->p + PyUnicode_GET_LENGTH(raw);
        return 1;
    }
    if (PyBytes_CheckExact(raw)) {
        sc->p = PyBytes_AS_STRING(raw);
        sc->end = sc->p + PyBytes_GET_SIZE(raw);
        return 1;
    }
    return 0;
}

#define SPAN_IS(p, n, lit) ((n) == (Py_ssize_t)sizeof(lit) - 1 && memcmp(p, lit, sizeof(lit) - 1) == 0)

typedef struct {
    int buy;
    const char *px, *qty;
    Py_ssize_t px_n, qty_n;
} Change;

#define MAX_CHANGES 64 /* more in one frame: decoded as before */

PyDoc_STRVAR(coinbase_raw_doc,
"coinbase_raw(handler, raw, rts) -> list | None: coinbase_frame of a Coinbase l2update read\n"
"from its text (str or bytes) without decoding it; None (nothing changed) for anything else.");

static PyObject *coinbase_raw_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = frame_args("coinbase_raw", args, nargs);
    if (ready <= 0)
        return ready < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *h = args[0], *raw = args[1], *rts = args[2];
    Scan sc;
    if (!raw_text(raw, &sc))
        Py_RETURN_NONE;
    Change ch[MAX_CHANGES];
    int nch = 0, seen = 0; /* bits: type, product_id, changes, time */
    const char *pid = NULL, *time = NULL, *k;
    Py_ssize_t pid_n = 0, time_n = 0, kn;
    if (!scan_ch(&sc, '{'))
        Py_RETURN_NONE;
    do {
        if (!scan_str(&sc, &k, &kn) || !scan_ch(&sc, ':'))
            Py_RETURN_NONE;
        const char *v;
        Py_ssize_t vn;
        int bit = SPAN_IS(k, kn, "type") ? 1 : SPAN_IS(k, kn, "product_id") ? 2
                  : SPAN_IS(k, kn, "changes") ? 4 : SPAN_IS(k, kn, "time") ? 8 : 0;
        if (bit == 0 || (seen & bit))
            Py_RETURN_NONE;
        seen |= bit;
        if (bit == 4) {
            if (!scan_ch(&sc, '['))
                Py_RETURN_NONE;
            if (!scan_ch(&sc, ']')) {
                do {
                    const char *side;
                    Py_ssize_t side_n;
                    if (nch == MAX_CHANGES || !scan_ch(&sc, '[') ||
                        !scan_str(&sc, &side, &side_n) || !scan_ch(&sc, ',') ||
                        !scan_str(&sc, &ch[nch].px, &ch[nch].px_n) || !scan_ch(&sc, ',') ||
                        !scan_str(&sc, &ch[nch].qty, &ch[nch].qty_n) || !scan_ch(&sc, ']'))
                        Py_RETURN_NONE;
                    ch[nch].buy = SPAN_IS(side, side_n, "buy");
                    if (!ch[nch].buy && !SPAN_IS(side, side_n, "sell"))
                        Py_RETURN_NONE;
                    nch++;
                } while (scan_ch(&sc, ','));
                if (!scan_ch(&sc, ']'))
                    Py_RETURN_NONE;
            }
            continue;
        }
        if (!scan_str(&sc, &v, &vn))
            Py_RETURN_NONE;
        if (bit == 1 && !SPAN_IS(v, vn, "l2update"))
            Py_RETURN_NONE;
        if (bit == 2) {
            pid = v;
            pid_n = vn;
        } else if (bit == 8) {
            time = v;
            time_n = vn;
        }
    } while (scan_ch(&sc, ','));
    long long ts;
    if (!scan_ch(&sc, '}') || sc.p != sc.end || seen != 15 || !iso_ms_text(time, time_n, &ts) ||
        ts < 0 || ts > MAX_TS_LL)
        Py_RETURN_NONE;
    PyObject *sym = NULL, *book = NULL, *bids = NULL, *asks = NULL, *out = NULL;
    Lvs lb, la;
    lvs_init(&lb);
    lvs_init(&la);
    if ((sym = valid_symbol_text(h, fo_to_symbol, pid, pid_n)) == NULL ||
        (book = synced_book(h, sym)) == NULL)
        goto python;
    if ((bids = PyList_New(0)) == NULL || (asks = PyList_New(0)) == NULL)
        goto done;
    for (int i = 0; i < nch; i++) {
        PyObject *px = ascii_str(ch[i].px, ch[i].px_n);
        PyObject *qty = px == NULL ? NULL : ascii_str(ch[i].qty, ch[i].qty_n);
        int rc = qty == NULL ? -1 : pair_into(ch[i].buy ? bids : asks, ch[i].buy ? &lb : &la,
                                              px, qty);
        Py_XDECREF(px); /* the emitted pair holds them, and the levels borrow from it */
        Py_XDECREF(qty);
        if (rc < 0)
            goto done;
        if (rc == 0)
            goto python;
    }
    out = coinbase_update(h, rts, sym, book, ts, bids, asks, &lb, &la);
    goto done;
python:
    if (!PyErr_Occurred())
        out = Py_NewRef(Py_None);
done:
    lvs_free(&lb);
    lvs_free(&la);
    Py_XDECREF(sym);
    Py_XDECREF(book);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    return out;
}
ENTRY(coinbase_raw)

/* The levels of a side sent as they are ([[px, qty], ...] exactly): 1, else 0; -1 error. */
static int levels_as_sent(PyObject *raw, Lvs *s)
{
    if (!PyList_CheckExact(raw))
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(raw); i++) {
        PyObject *lv = PyList_GET_ITEM(raw, i);
        if (!PyList_CheckExact(lv) || PyList_GET_SIZE(lv) != 2)
            return 0;
        int rc = lvs_push(s, PyList_GET_ITEM(lv, 0), PyList_GET_ITEM(lv, 1));
        if (rc <= 0)
            return rc;
    }
    return 1;
}

/* An attribute's truth: 1/0, -1 error. */
static int attr_true(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    int t = v == NULL ? -1 : PyObject_IsTrue(v);
    Py_XDECREF(v);
    return t;
}

static PyObject *binance_update(PyObject *h, PyObject *rts, PyObject *s, PyObject *E,
                                long long first, long long last, long long pu_v, int futures,
                                PyObject *b, PyObject *a, Lvs *lb, Lvs *la);

PyDoc_STRVAR(binance_frame_doc,
"binance_frame(handler, msg, rts) -> list | None: a Binance (spot or USD-M) depthUpdate of a\n"
"synced symbol, as BinanceHandler._on_message; None (nothing changed) for anything else.");

static PyObject *binance_frame_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = frame_args("binance_frame", args, nargs);
    if (ready <= 0)
        return ready < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *h = args[0], *msg = args[1], *rts = args[2], *data = msg;
    if (!PyDict_CheckExact(msg))
        Py_RETURN_NONE;
    int rest = PyDict_Contains(msg, fm_last_update_id), wrapped = 0;
    if (rest == 0)
        wrapped = PyDict_Contains(msg, fm_stream);
    if (rest != 0 || wrapped < 0)
        return (rest < 0 || wrapped < 0) ? NULL : Py_NewRef(Py_None);
    if (wrapped) {
        data = PyDict_GetItemWithError(msg, fm_data);
        if (data == NULL || !PyDict_CheckExact(data))
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    int futures = attr_true(h, fa_futures);
    if (futures < 0)
        return NULL;
    PyObject *e = PyDict_GetItemWithError(data, fm_e);
    PyObject *U = e == NULL ? NULL : PyDict_GetItemWithError(data, fm_U);
    PyObject *u = U == NULL ? NULL : PyDict_GetItemWithError(data, fm_u);
    PyObject *E = u == NULL ? NULL : PyDict_GetItemWithError(data, fm_E);
    PyObject *pu = (E == NULL || !futures) ? NULL : PyDict_GetItemWithError(data, fm_pu);
    PyObject *b = E == NULL ? NULL : PyDict_GetItemWithError(data, fm_b);
    PyObject *a = b == NULL ? NULL : PyDict_GetItemWithError(data, fm_a);
    PyObject *s = a == NULL ? NULL : PyDict_GetItemWithError(data, fm_s);
    if (s == NULL || (futures && pu == NULL) || PyErr_Occurred())
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    long long first, last, ts, pu_v = 0;
    if (!text_is(e, "depthUpdate") || !int_in(U, LLONG_MIN, LLONG_MAX, &first) ||
        !int_in(u, LLONG_MIN, LLONG_MAX, &last) || !int_in(E, 0, MAX_TS_LL, &ts) ||
        (futures && !int_in(pu, LLONG_MIN, LLONG_MAX, &pu_v)) || first > last ||
        !PyList_CheckExact(b) || !PyList_CheckExact(a) || !plain_ascii(s))
        Py_RETURN_NONE;
    Lvs lb, la;
    lvs_init(&lb);
    lvs_init(&la);
    int rc = levels_as_sent(b, &lb);
    if (rc > 0)
        rc = levels_as_sent(a, &la);
    PyObject *out = rc < 0 ? NULL
                    : rc == 0 ? Py_NewRef(Py_None)
                              : binance_update(h, rts, s, E, first, last, pu_v, futures, b, a,
                                               &lb, &la);
    lvs_free(&lb);
    lvs_free(&la);
    return out;
}
ENTRY(binance_frame)

/* The rest of binance_frame (and binance_raw) once the fields were read: the levels (lb, la)
 * parsed from the emitted b and a. */
static PyObject *binance_update(PyObject *h, PyObject *rts, PyObject *s, PyObject *E,
                                long long first, long long last, long long pu_v, int futures,
                                PyObject *b, PyObject *a, Lvs *lb, Lvs *la)
{
    long long seq;
    PyObject *sym = NULL, *book = NULL, *sync = NULL, *st = NULL, *out = NULL;
    if ((sym = valid_symbol(h, fo_to_symbol, s)) == NULL)
        goto python;
    if ((sync = PyObject_GetAttr(h, fa_sync)) == NULL || !PyDict_CheckExact(sync)) {
        clear_ordinary();
        goto python;
    }
    if ((st = PyDict_GetItemWithError(sync, sym)) == NULL)
        goto python;
    Py_INCREF(st);
    int synced = attr_true(st, fa_synced);
    if (synced <= 0)
        goto python;
    /* The book: the Python path creates none here (a synced symbol has one) */
    PyObject *books = handler_attr(h, H_BOOKS);
    if (books != NULL && PyDict_CheckExact(books))
        book = Py_XNewRef(PyDict_GetItemWithError(books, sym));
    Py_XDECREF(books);
    if (book == NULL) {
        if (clear_ordinary() < 0)
            goto done;
        goto python;
    }
    PyObject *bseq = PyObject_GetAttr(book, fk_seq);
    int plain = int_in(bseq, LLONG_MIN, LLONG_MAX, &seq);
    Py_XDECREF(bseq);
    if (!plain && clear_ordinary() < 0)
        goto done;
    if (!plain || seq < 0 || seq == LLONG_MAX)
        goto python;
    long long prev;
    if (futures) {
        if (last < seq)
            goto python; /* dropped */
        int fresh = attr_true(st, fa_fresh);
        if (fresh < 0)
            goto done;
        prev = fresh && ((first <= seq && seq <= last) || pu_v == seq) ? seq : pu_v;
    } else {
        if (last <= seq)
            goto python; /* dropped */
        prev = first <= seq + 1 ? seq : first - 1;
    }
    if (prev != seq || last <= seq || !book_ready(book, last, prev, 1))
        goto python;
    PyObject *d = commit_update(h, book, sym, E, rts, last, prev, b, a, NULL, lb, la);
    if (d == NULL || PyObject_SetAttr(st, fa_fresh, Py_False) < 0) {
        Py_XDECREF(d);
        goto done;
    }
    PyObject *unsynced = handler_attr(h, H_UNSYNCED);
    int lost = unsynced == NULL ? -1 : PySequence_Contains(unsynced, sym);
    Py_XDECREF(unsynced);
    if (lost < 0 || (lost && PyObject_SetAttr(st, fa_synced, Py_False) < 0)) {
        Py_DECREF(d);
        goto done;
    }
    out = list_of(d);
    goto done;
python:
    if (!PyErr_Occurred())
        out = Py_NewRef(Py_None);
done:
    Py_XDECREF(sym);
    Py_XDECREF(book);
    Py_XDECREF(sync);
    Py_XDECREF(st);
    return out;
}

/* -- a Binance depthUpdate read from its text --------------------------------------------------
 * As coinbase_raw: {"stream":...,"data":{"e":"depthUpdate","E":..,"s":..,"U":..,"u":..,["pu":..,]
 * ["T":..,]"b":[[px,qty],...],"a":[...]}} (or the data object alone; keys in any order) read
 * without a decode, building only the level lists the event emits; anything else (another or a
 * repeated key, whitespace, an escape, non-ASCII, a number that is not a plain integer) answers
 * None before anything changed, and the frame is decoded as before. */

/* A plain JSON integer 0 | [1-9][0-9]{0,17}: 1 and *v, else 0. */
static int scan_uint(Scan *s, long long *v)
{
    const char *p = s->p;
    if (p >= s->end || *p < '0' || *p > '9' || (*p == '0' && p + 1 < s->end && p[1] >= '0' &&
                                                p[1] <= '9'))
        return 0;
    long long x = 0;
    int n = 0;
    for (; p < s->end && *p >= '0' && *p <= '9'; p++) {
        if (++n > 18)
            return 0;
        x = x * 10 + (*p - '0');
    }
    *v = x;
    s->p = p;
    return 1;
}

/* [[px, qty], ...] of strings into out (new [px, qty] lists) and l: 1, 0 not so, -1 error. */
static int scan_pairs(Scan *s, PyObject *out, Lvs *l)
{
    if (!scan_ch(s, '['))
        return 0;
    if (scan_ch(s, ']'))
        return 1;
    do {
        const char *p, *q;
        Py_ssize_t pn, qn;
        if (!scan_ch(s, '[') || !scan_str(s, &p, &pn) || !scan_ch(s, ',') ||
            !scan_str(s, &q, &qn) || !scan_ch(s, ']'))
            return 0;
        PyObject *px = ascii_str(p, pn);
        PyObject *qty = px == NULL ? NULL : ascii_str(q, qn);
        int rc = qty == NULL ? -1 : pair_into(out, l, px, qty);
        Py_XDECREF(px);
        Py_XDECREF(qty);
        if (rc <= 0)
            return rc;
    } while (scan_ch(s, ','));
    return scan_ch(s, ']');
}

enum { BK_E = 1, BK_TS = 2, BK_S = 4, BK_FIRST = 8, BK_LAST = 16, BK_PU = 32, BK_B = 64,
       BK_A = 128, BK_T = 256 };

typedef struct {
    int seen;
    long long ts, first, last, pu;
    const char *sym;
    Py_ssize_t sym_n;
} DepthText;

/* The members of a depthUpdate object (after its '{'): 1, 0 not plainly one, -1 error. */
static int scan_depth(Scan *s, DepthText *t, PyObject *b, PyObject *a, Lvs *lb, Lvs *la)
{
    do {
        const char *k, *v;
        Py_ssize_t kn, vn;
        long long x;
        if (!scan_str(s, &k, &kn) || !scan_ch(s, ':'))
            return 0;
        int bit = SPAN_IS(k, kn, "e") ? BK_E : SPAN_IS(k, kn, "E") ? BK_TS
                  : SPAN_IS(k, kn, "s") ? BK_S : SPAN_IS(k, kn, "U") ? BK_FIRST
                  : SPAN_IS(k, kn, "u") ? BK_LAST : SPAN_IS(k, kn, "pu") ? BK_PU
                  : SPAN_IS(k, kn, "b") ? BK_B : SPAN_IS(k, kn, "a") ? BK_A
                  : SPAN_IS(k, kn, "T") ? BK_T : 0;
        if (bit == 0 || (t->seen & bit))
            return 0;
        t->seen |= bit;
        if (bit == BK_E || bit == BK_S) {
            if (!scan_str(s, &v, &vn) || (bit == BK_E && !SPAN_IS(v, vn, "depthUpdate")))
                return 0;
            if (bit == BK_S) {
                t->sym = v;
                t->sym_n = vn;
            }
        } else if (bit == BK_B || bit == BK_A) {
            int rc = scan_pairs(s, bit == BK_B ? b : a, bit == BK_B ? lb : la);
            if (rc <= 0)
                return rc;
        } else {
            if (!scan_uint(s, &x))
                return 0;
            if (bit == BK_TS)
                t->ts = x;
            else if (bit == BK_FIRST)
                t->first = x;
            else if (bit == BK_LAST)
                t->last = x;
            else if (bit == BK_PU)
                t->pu = x;
        }
    } while (scan_ch(s, ','));
    return scan_ch(s, '}');
}

PyDoc_STRVAR(binance_raw_doc,
"binance_raw(handler, raw, rts) -> list | None: binance_frame of a depthUpdate read from its\n"
"text (str or bytes) without decoding it; None (nothing changed) for anything else.");

static PyObject *binance_raw_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = frame_args("binance_raw", args, nargs);
    if (ready <= 0)
        return ready < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *h = args[0], *raw = args[1], *rts = args[2];
    Scan sc;
    if (!raw_text(raw, &sc))
        Py_RETURN_NONE;
    int futures = attr_true(h, fa_futures);
    if (futures < 0)
        return NULL;
    DepthText t = {0};
    PyObject *b = PyList_New(0), *a = PyList_New(0), *s = NULL, *E = NULL, *out = NULL;
    Lvs lb, la;
    lvs_init(&lb);
    lvs_init(&la);
    int rc = 0;
    if (b == NULL || a == NULL) {
        rc = -1;
        goto done;
    }
    if (!scan_ch(&sc, '{'))
        goto done;
    /* {"stream":...,"data":{...}} in either order, or the data object alone */
    const char *k, *v;
    Py_ssize_t kn, vn;
    Scan probe = sc;
    if (scan_str(&probe, &k, &kn) && (SPAN_IS(k, kn, "stream") || SPAN_IS(k, kn, "data"))) {
        int stream = 0, data = 0;
        do {
            rc = 0; /* until the member is read */
            if (!scan_str(&sc, &k, &kn) || !scan_ch(&sc, ':'))
                goto done;
            if (SPAN_IS(k, kn, "stream") && !stream) {
                stream = 1;
                if (!scan_str(&sc, &v, &vn))
                    goto done;
            } else if (SPAN_IS(k, kn, "data") && !data) {
                data = 1;
                if (!scan_ch(&sc, '{') || (rc = scan_depth(&sc, &t, b, a, &lb, &la)) <= 0)
                    goto done;
            } else {
                goto done;
            }
        } while (scan_ch(&sc, ','));
        rc = data && stream && scan_ch(&sc, '}');
    } else {
        rc = scan_depth(&sc, &t, b, a, &lb, &la);
    }
    int need = BK_E | BK_TS | BK_S | BK_FIRST | BK_LAST | BK_B | BK_A | (futures ? BK_PU : 0);
    if (rc <= 0 || sc.p != sc.end || (t.seen & need) != need || t.first > t.last ||
        t.ts > MAX_TS_LL) {
        rc = rc < 0 ? -1 : 0;
        goto done;
    }
    if ((s = ascii_str(t.sym, t.sym_n)) == NULL ||
        (E = PyLong_FromLongLong(t.ts)) == NULL) {
        rc = -1;
        goto done;
    }
    out = binance_update(h, rts, s, E, t.first, t.last, t.pu, futures, b, a, &lb, &la);
    rc = 1;
done:
    if (rc == 0 && !PyErr_Occurred())
        out = Py_NewRef(Py_None);
    lvs_free(&lb);
    lvs_free(&la);
    Py_XDECREF(b);
    Py_XDECREF(a);
    Py_XDECREF(s);
    Py_XDECREF(E);
    return out;
}
ENTRY(binance_raw)

/* -- a Kraken v1 book update read from its text -----------------------------------------------
 * As coinbase_raw: [channelID,{"a":[[px,qty,time(,"r")],...],"b":[...],"c":"..."}(,{...}),
 * "book-N","PAIR"] read without a decode, building only the strings and lists the event keeps;
 * anything else (a snapshot's "as"/"bs", another or a repeated key, whitespace, an escape,
 * non-ASCII, a level of another length) answers None before anything changed, and the frame is
 * decoded as before. */

/* One part's member "a" or "b": levels of three or four strings, into out and l; the newest
 * time into *ts. 1, 0 not so, -1 error. */
static int scan_kraken_levels(Scan *s, PyObject *out, Lvs *l, long long *ts)
{
    if (!scan_ch(s, '['))
        return 0;
    if (scan_ch(s, ']'))
        return 1;
    do {
        const char *p, *q, *t, *r;
        Py_ssize_t pn, qn, tn, rn;
        long long ms;
        if (!scan_ch(s, '[') || !scan_str(s, &p, &pn) || !scan_ch(s, ',') ||
            !scan_str(s, &q, &qn) || !scan_ch(s, ',') || !scan_str(s, &t, &tn) ||
            (scan_ch(s, ',') && !scan_str(s, &r, &rn)) || !scan_ch(s, ']') ||
            !sec_ms_text(t, tn, &ms))
            return 0;
        PyObject *px = ascii_str(p, pn);
        PyObject *qty = px == NULL ? NULL : ascii_str(q, qn);
        int rc = qty == NULL ? -1 : pair_into(out, l, px, qty);
        Py_XDECREF(px);
        Py_XDECREF(qty);
        if (rc <= 0)
            return rc;
        if (ms > *ts)
            *ts = ms;
    } while (scan_ch(s, ','));
    return scan_ch(s, ']');
}

PyDoc_STRVAR(kraken_raw_doc,
"kraken_raw(handler, raw, rts) -> list | None: kraken_frame of a book update read from its\n"
"text (str or bytes) without decoding it; None (nothing changed) for anything else.");

static PyObject *kraken_raw_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = frame_args("kraken_raw", args, nargs);
    if (ready <= 0)
        return ready < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *h = args[0], *raw = args[1], *rts = args[2];
    Scan sc;
    if (!raw_text(raw, &sc))
        Py_RETURN_NONE;
    long long chan, ts = 0, ck = 0, depth = 0;
    if (!scan_ch(&sc, '[') || !scan_uint(&sc, &chan) || !scan_ch(&sc, ','))
        Py_RETURN_NONE;
    PyObject *bids = PyList_New(0), *asks = PyList_New(0), *sym = NULL,
             *book = NULL, *depth_o = NULL, *ck_o = NULL, *out = NULL;
    Lvs lb, la;
    lvs_init(&lb);
    lvs_init(&la);
    int rc = 0, parts = 0, has_ck = 0;
    const char *c = NULL, *k;
    Py_ssize_t cn = 0, kn;
    if (bids == NULL || asks == NULL) {
        rc = -1;
        goto done;
    }
    while (scan_ch(&sc, '{')) { /* the parts */
        int seen = 0;
        do {
            if (!scan_str(&sc, &k, &kn) || !scan_ch(&sc, ':'))
                goto done;
            int bit = SPAN_IS(k, kn, "b") ? 1 : SPAN_IS(k, kn, "a") ? 2 : SPAN_IS(k, kn, "c") ? 4 : 0;
            if (bit == 0 || (seen & bit)) /* "as"/"bs" (a snapshot), another or a repeated key */
                goto done;
            seen |= bit;
            if (bit == 4) {
                if (!scan_str(&sc, &c, &cn)) /* checksum = p.get("c", checksum): the last */
                    goto done;
                has_ck = 1;
            } else if ((rc = scan_kraken_levels(&sc, bit == 1 ? bids : asks, bit == 1 ? &lb : &la,
                                                &ts)) <= 0) {
                goto done;
            }
            rc = 0;
        } while (scan_ch(&sc, ','));
        if (!scan_ch(&sc, '}') || !scan_ch(&sc, ','))
            goto done;
        parts++;
    }
    const char *ch, *pr;
    Py_ssize_t chn, prn;
    if (parts == 0 || !scan_str(&sc, &ch, &chn) || !scan_ch(&sc, ',') ||
        !scan_str(&sc, &pr, &prn) || !scan_ch(&sc, ']') || sc.p != sc.end || chn < 4 ||
        memcmp(ch, "book", 4) != 0 || ts > MAX_TS_LL)
        goto done;
    if (has_ck && !digits_text(c, cn, 18, &ck)) /* int(checksum), plainly */
        goto done;
    if ((depth_o = kraken_depth(h, ch, chn, &depth)) == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    if (has_ck && (ck_o = PyLong_FromLongLong(ck)) == NULL) {
        rc = -1;
        goto done;
    }
    if ((sym = valid_symbol_text(h, fo_kraken_symbol, pr, prn)) == NULL ||
        (book = synced_book(h, sym)) == NULL)
        goto done;
    out = kraken_update(h, rts, sym, book, depth_o, depth, bids, asks, &lb, &la, ts, ck_o);
    rc = 1;
done:
    if (rc == 0 && !PyErr_Occurred())
        out = Py_NewRef(Py_None);
    lvs_free(&lb);
    lvs_free(&la);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    Py_XDECREF(sym);
    Py_XDECREF(book);
    Py_XDECREF(depth_o);
    Py_XDECREF(ck_o);
    return out;
}
ENTRY(kraken_raw)

/* OKX's [lv[:2] for lv in raw] into out (levels of at least two fields), its levels into s:
 * 1, else 0; -1 error. */
static int okx_levels(PyObject *raw, PyObject *out, Lvs *s)
{
    if (raw == NULL) /* data.get("bids", ()) */
        return 1;
    if (!PyList_CheckExact(raw))
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(raw); i++) {
        PyObject *lv = PyList_GET_ITEM(raw, i);
        if (!PyList_CheckExact(lv) || PyList_GET_SIZE(lv) < 2)
            return 0;
        int rc = pair_into(out, s, PyList_GET_ITEM(lv, 0), PyList_GET_ITEM(lv, 1));
        if (rc <= 0)
            return rc;
    }
    return 1;
}

/* The rest of okx_frame (and okx_raw) once the frame was read: inst the instId, check the
 * checksum sent (an int, or NULL for none), seq and prev the seqIds unless numbered by the
 * handler, the levels (lb, la) parsed from the emitted bids and asks. A new reference: [events],
 * None (the Python decides) or NULL. */
static PyObject *okx_update(PyObject *h, PyObject *rts, PyObject *inst, long long ts,
                            PyObject *check, int numbered, long long seq, long long prev,
                            PyObject *bids, PyObject *asks, Lvs *lb, Lvs *la)
{
    PyObject *sym = NULL, *book = NULL, *ts_o = NULL, *out = NULL;
    if (!numbered && seq == prev && lb->n == 0 && la->n == 0)
        goto python; /* an empty update that repeats its number: ignored */
    if ((sym = valid_symbol(h, fo_to_symbol, inst)) == NULL || (book = synced_book(h, sym)) == NULL)
        goto python;
    if (numbered) {
        PyObject *bseq = PyObject_GetAttr(book, fk_seq);
        int plain = int_in(bseq, LLONG_MIN, LLONG_MAX, &prev);
        Py_XDECREF(bseq);
        if (!plain || !next_number(h, sym, &seq))
            goto python;
    }
    if (fo_okx_py == NULL || !book_ready(book, seq, prev, 1))
        goto python;
    if ((ts_o = PyLong_FromLongLong(ts)) == NULL || (numbered && store_number(h, sym, seq) < 0))
        goto done;
    PyObject *d = commit_update(h, book, sym, ts_o, rts, seq, prev, bids, asks, check, lb, la);
    if (d == NULL)
        goto done;
    if (check == NULL) {
        out = list_of(d);
        goto done;
    }
    PyObject *crc = book_checksum(book, 1);
    out = crc == NULL ? NULL : checksum_step(h, sym, d, crc, check, numbered);
    Py_DECREF(d);
    goto done;
python:
    if (!PyErr_Occurred())
        out = Py_NewRef(Py_None);
done:
    Py_XDECREF(sym);
    Py_XDECREF(book);
    Py_XDECREF(ts_o);
    return out;
}

PyDoc_STRVAR(okx_frame_doc,
"okx_frame(handler, msg, rts) -> list | None: an OKX books update (one book in the frame),\n"
"as OkxHandler._on_message; None (nothing changed) for anything else.");

static PyObject *okx_frame_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = frame_args("okx_frame", args, nargs);
    if (ready <= 0)
        return ready < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *h = args[0], *msg = args[1], *rts = args[2];
    if (!PyDict_CheckExact(msg))
        Py_RETURN_NONE;
    int ev = PyDict_Contains(msg, fm_event);
    if (ev != 0)
        return ev < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *data = PyDict_GetItemWithError(msg, fm_data);
    PyObject *arg = data == NULL ? NULL : PyDict_GetItemWithError(msg, fm_arg);
    PyObject *action = arg == NULL ? NULL : PyDict_GetItemWithError(msg, fk_action);
    if (action == NULL || PyErr_Occurred())
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if (!PyList_CheckExact(data) || PyList_GET_SIZE(data) != 1 || !PyDict_CheckExact(arg) ||
        !text_is(action, "update"))
        Py_RETURN_NONE;
    PyObject *dd = PyList_GET_ITEM(data, 0);
    PyObject *channel = PyDict_GetItemWithError(arg, fm_channel);
    PyObject *inst = channel == NULL ? NULL : PyDict_GetItemWithError(arg, fm_inst_id);
    if (inst == NULL || !starts_with(channel, "books") || !PyDict_CheckExact(dd))
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    PyObject *ts_text = PyDict_GetItemWithError(dd, fk_ts);
    PyObject *check = ts_text == NULL ? NULL : PyDict_GetItemWithError(dd, fk_checksum);
    PyObject *seq_id = PyErr_Occurred() ? NULL : PyDict_GetItemWithError(dd, fm_seq_id);
    if (ts_text == NULL || PyErr_Occurred())
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    long long ts, ck = 0, seq = 0, prev = 0;
    if (!digits_of(ts_text, 13, &ts))
        Py_RETURN_NONE;
    /* checksum = data.get("checksum") or None */
    if (check != NULL && !int_in(check, -MAX_INT_LL, MAX_INT_LL, &ck))
        Py_RETURN_NONE;
    if (ck == 0)
        check = NULL;
    int numbered = seq_id == NULL || seq_id == Py_None;
    PyObject *prev_id = NULL;
    if (!numbered) {
        prev_id = PyDict_GetItemWithError(dd, fm_prev_seq_id);
        if (!int_in(seq_id, 0, MAX_INT_LL, &seq) || !int_in(prev_id, 0, MAX_INT_LL, &prev))
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    PyObject *bids = NULL, *asks = NULL, *out = NULL;
    Lvs lb, la;
    lvs_init(&lb);
    lvs_init(&la);
    if ((bids = PyList_New(0)) == NULL || (asks = PyList_New(0)) == NULL)
        goto done;
    PyObject *braw = PyDict_GetItemWithError(dd, fk_bids);
    PyObject *araw = PyErr_Occurred() ? NULL : PyDict_GetItemWithError(dd, fk_asks);
    if (PyErr_Occurred())
        goto done;
    int rc = okx_levels(braw, bids, &lb);
    if (rc > 0)
        rc = okx_levels(araw, asks, &la);
    if (rc < 0)
        goto done;
    out = rc == 0 ? Py_NewRef(Py_None) /* odd levels */
                  : okx_update(h, rts, inst, ts, check, numbered, seq, prev, bids, asks, &lb, &la);
done:
    lvs_free(&lb);
    lvs_free(&la);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    return out;
}
ENTRY(okx_frame)

/* -- an OKX books update read from its text ----------------------------------------------------
 * As coinbase_raw: {"arg":{"channel":"books...","instId":...},"action":"update","data":[{"asks":
 * [[px,qty,...],...],"bids":[...],"ts":"...","checksum":n(,"seqId":n,"prevSeqId":n)}]} read
 * without a decode (keys in any order), building only the strings and lists the event keeps;
 * anything else answers None before anything changed, and the frame is decoded as before. */

/* A JSON integer -?(0|[1-9][0-9]{0,17}): 1 and *v, else 0. */
static int scan_int_text(Scan *s, long long *v)
{
    int neg = scan_ch(s, '-');
    if (!scan_uint(s, v))
        return 0;
    if (neg)
        *v = -*v;
    return 1;
}

/* OKX levels: [[px, qty(, more strings, up to 4)], ...] into out and l (px and qty kept). */
static int scan_okx_levels(Scan *s, PyObject *out, Lvs *l)
{
    if (!scan_ch(s, '['))
        return 0;
    if (scan_ch(s, ']'))
        return 1;
    do {
        const char *p, *q, *x;
        Py_ssize_t pn, qn, xn;
        int more = 0;
        if (!scan_ch(s, '[') || !scan_str(s, &p, &pn) || !scan_ch(s, ',') || !scan_str(s, &q, &qn))
            return 0;
        while (scan_ch(s, ','))
            if (++more > 2 || !scan_str(s, &x, &xn))
                return 0;
        if (!scan_ch(s, ']'))
            return 0;
        PyObject *px = ascii_str(p, pn);
        PyObject *qty = px == NULL ? NULL : ascii_str(q, qn);
        int rc = qty == NULL ? -1 : pair_into(out, l, px, qty);
        Py_XDECREF(px);
        Py_XDECREF(qty);
        if (rc <= 0)
            return rc;
    } while (scan_ch(s, ','));
    return scan_ch(s, ']');
}

PyDoc_STRVAR(okx_raw_doc,
"okx_raw(handler, raw, rts) -> list | None: okx_frame of a books update read from its text\n"
"(str or bytes) without decoding it; None (nothing changed) for anything else.");

static PyObject *okx_raw_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = frame_args("okx_raw", args, nargs);
    if (ready <= 0)
        return ready < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *h = args[0], *raw = args[1], *rts = args[2];
    Scan sc;
    if (!raw_text(raw, &sc))
        Py_RETURN_NONE;
    PyObject *bids = PyList_New(0), *asks = PyList_New(0), *inst_o = NULL, *check_o = NULL,
             *out = NULL;
    Lvs lb, la;
    lvs_init(&lb);
    lvs_init(&la);
    int rc = 0, seen = 0, dseen = 0;
    const char *k, *v, *inst = NULL, *tsv = NULL;
    Py_ssize_t kn, vn, inst_n = 0, tsn = 0;
    long long ck = 0, seq = 0, prev = 0, ts = 0;
    if (bids == NULL || asks == NULL) {
        rc = -1;
        goto done;
    }
    if (!scan_ch(&sc, '{'))
        goto done;
    do { /* arg 1, action 2, data 4 */
        if (!scan_str(&sc, &k, &kn) || !scan_ch(&sc, ':'))
            goto done;
        int bit = SPAN_IS(k, kn, "arg") ? 1 : SPAN_IS(k, kn, "action") ? 2
                  : SPAN_IS(k, kn, "data") ? 4 : 0;
        if (bit == 0 || (seen & bit))
            goto done;
        seen |= bit;
        if (bit == 1) {
            int aseen = 0;
            if (!scan_ch(&sc, '{'))
                goto done;
            do {
                if (!scan_str(&sc, &k, &kn) || !scan_ch(&sc, ':') || !scan_str(&sc, &v, &vn))
                    goto done;
                int abit = SPAN_IS(k, kn, "channel") ? 1 : SPAN_IS(k, kn, "instId") ? 2 : 0;
                if (abit == 0 || (aseen & abit))
                    goto done;
                aseen |= abit;
                if (abit == 1 && (vn < 5 || memcmp(v, "books", 5) != 0))
                    goto done;
                if (abit == 2) {
                    inst = v;
                    inst_n = vn;
                }
            } while (scan_ch(&sc, ','));
            if (aseen != 3 || !scan_ch(&sc, '}'))
                goto done;
        } else if (bit == 2) {
            if (!scan_str(&sc, &v, &vn) || !SPAN_IS(v, vn, "update"))
                goto done;
        } else {
            if (!scan_ch(&sc, '[') || !scan_ch(&sc, '{'))
                goto done;
            do { /* asks 1, bids 2, ts 4, checksum 8, seqId 16, prevSeqId 32 */
                if (!scan_str(&sc, &k, &kn) || !scan_ch(&sc, ':'))
                    goto done;
                int dbit = SPAN_IS(k, kn, "asks") ? 1 : SPAN_IS(k, kn, "bids") ? 2
                           : SPAN_IS(k, kn, "ts") ? 4 : SPAN_IS(k, kn, "checksum") ? 8
                           : SPAN_IS(k, kn, "seqId") ? 16 : SPAN_IS(k, kn, "prevSeqId") ? 32 : 0;
                if (dbit == 0 || (dseen & dbit))
                    goto done;
                dseen |= dbit;
                if (dbit <= 2) {
                    if ((rc = scan_okx_levels(&sc, dbit == 2 ? bids : asks,
                                              dbit == 2 ? &lb : &la)) <= 0)
                        goto done;
                    rc = 0;
                } else if (dbit == 4) {
                    if (!scan_str(&sc, &tsv, &tsn))
                        goto done;
                } else if (!scan_int_text(&sc, dbit == 8 ? &ck : dbit == 16 ? &seq : &prev)) {
                    goto done;
                }
            } while (scan_ch(&sc, ','));
            if (!scan_ch(&sc, '}') || !scan_ch(&sc, ']'))
                goto done;
        }
    } while (scan_ch(&sc, ','));
    if (!scan_ch(&sc, '}') || sc.p != sc.end || seen != 7 || !(dseen & 4) ||
        ((dseen & 16) && (!(dseen & 32) || seq < 0 || prev < 0)))
        goto done;
    if (!digits_text(tsv, tsn, 13, &ts)) /* int(data["ts"]): plain digits */
        goto done;
    if ((inst_o = ascii_str(inst, inst_n)) == NULL ||
        (ck != 0 && (check_o = PyLong_FromLongLong(ck)) == NULL)) {
        rc = -1;
        goto done;
    }
    out = okx_update(h, rts, inst_o, ts, check_o, !(dseen & 16), seq, prev, bids, asks, &lb, &la);
    rc = 1;
done:
    if (rc == 0 && !PyErr_Occurred())
        out = Py_NewRef(Py_None);
    lvs_free(&lb);
    lvs_free(&la);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    Py_XDECREF(inst_o);
    Py_XDECREF(check_o);
    return out;
}
ENTRY(okx_raw)

PyDoc_STRVAR(bybit_frame_doc,
"bybit_frame(handler, msg, rts) -> list | None: a Bybit v5 orderbook delta, as\n"
"BybitHandler._on_message; None (nothing changed) for anything else.");

static PyObject *bybit_frame_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = frame_args("bybit_frame", args, nargs);
    if (ready <= 0)
        return ready < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *h = args[0], *msg = args[1], *rts = args[2];
    if (!PyDict_CheckExact(msg))
        Py_RETURN_NONE;
    PyObject *topic = PyDict_GetItemWithError(msg, fm_topic);
    PyObject *data = topic == NULL ? NULL : PyDict_GetItemWithError(msg, fm_data);
    PyObject *kind = data == NULL ? NULL : PyDict_GetItemWithError(msg, fk_type);
    PyObject *ts = kind == NULL ? NULL : PyDict_GetItemWithError(msg, fk_ts);
    if (ts == NULL || !PyDict_CheckExact(data))
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    PyObject *s = PyDict_GetItemWithError(data, fm_s);
    PyObject *u = s == NULL ? NULL : PyDict_GetItemWithError(data, fm_u);
    PyObject *b = u == NULL ? NULL : PyDict_GetItemWithError(data, fm_b);
    PyObject *a = b == NULL ? NULL : PyDict_GetItemWithError(data, fm_a);
    if (a == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    long long seq, t;
    if (!starts_with(topic, "orderbook.") || !text_is(kind, "delta") ||
        !int_in(u, 1, MAX_INT_LL, &seq) || !int_in(ts, 0, MAX_TS_LL, &t))
        Py_RETURN_NONE;
    PyObject *sym = NULL, *book = NULL, *out = NULL;
    Lvs lb, la;
    lvs_init(&lb);
    lvs_init(&la);
    if ((sym = valid_symbol(h, fo_to_symbol, s)) == NULL || (book = synced_book(h, sym)) == NULL ||
        !book_ready(book, seq, seq - 1, 1))
        goto python;
    int rc = levels_as_sent(b, &lb);
    if (rc > 0)
        rc = levels_as_sent(a, &la);
    if (rc < 0)
        goto done;
    if (rc == 0)
        goto python;
    out = list_of(commit_update(h, book, sym, ts, rts, seq, seq - 1, b, a, NULL, &lb, &la));
    goto done;
python:
    if (!PyErr_Occurred())
        out = Py_NewRef(Py_None);
done:
    lvs_free(&lb);
    lvs_free(&la);
    Py_XDECREF(sym);
    Py_XDECREF(book);
    return out;
}
ENTRY(bybit_frame)

PyDoc_STRVAR(scan_ids_doc,
             "scan_ids(ids, start, stop, floor) -> (fresh, top): see operators/ticker.py.");

PyDoc_STRVAR(fmt_doc, "fmt(units, dp, scale=18) -> str: operators.fixed.fmt (see there).");

static PyMethodDef methods[] = {
    {"fmt", (PyCFunction)(void (*)(void))fmt, METH_FASTCALL | METH_KEYWORDS, fmt_doc},
    {"scan_ids", (PyCFunction)(void (*)(void))scan_ids, METH_FASTCALL, scan_ids_doc},
    {"ticker_runs", (PyCFunction)(void (*)(void))ticker_runs, METH_FASTCALL, ticker_runs_doc},
    {"group_by_key", group_by_key, METH_O, group_by_key_doc},
    {"top_index", top_index, METH_O, top_index_doc},
    {"candle_runs", (PyCFunction)(void (*)(void))candle_runs, METH_FASTCALL, candle_runs_doc},
    {"set_fmt_fallback", set_fmt_fallback, METH_O, "The Python fmt, for the uncommon cases."},
    {"decode_trades", decode_trades, METH_VARARGS, decode_trades_doc},
    {"book_levels", (PyCFunction)(void (*)(void))book_levels, METH_FASTCALL, book_levels_doc},
    {"set_levels", (PyCFunction)(void (*)(void))set_levels, METH_FASTCALL, set_levels_doc},
    {"side_top", (PyCFunction)(void (*)(void))side_top, METH_FASTCALL, side_top_doc},
    {"kraken_crc", (PyCFunction)(void (*)(void))kraken_crc, METH_FASTCALL, kraken_crc_doc},
    {"okx_crc", (PyCFunction)(void (*)(void))okx_crc, METH_FASTCALL, okx_crc_doc},
    {"frames_set", (PyCFunction)(void (*)(void))frames_set, METH_FASTCALL, frames_set_doc},
    {"kraken_frame", (PyCFunction)(void (*)(void))kraken_frame, METH_FASTCALL, kraken_frame_doc},
    {"coinbase_frame", (PyCFunction)(void (*)(void))coinbase_frame, METH_FASTCALL,
     coinbase_frame_doc},
    {"binance_frame", (PyCFunction)(void (*)(void))binance_frame, METH_FASTCALL,
     binance_frame_doc},
    {"okx_frame", (PyCFunction)(void (*)(void))okx_frame, METH_FASTCALL, okx_frame_doc},
    {"bybit_frame", (PyCFunction)(void (*)(void))bybit_frame, METH_FASTCALL, bybit_frame_doc},
    {"coinbase_raw", (PyCFunction)(void (*)(void))coinbase_raw, METH_FASTCALL, coinbase_raw_doc},
    {"binance_raw", (PyCFunction)(void (*)(void))binance_raw, METH_FASTCALL, binance_raw_doc},
    {"kraken_raw", (PyCFunction)(void (*)(void))kraken_raw, METH_FASTCALL, kraken_raw_doc},
    {"okx_raw", (PyCFunction)(void (*)(void))okx_raw, METH_FASTCALL, okx_raw_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "operators._native",
    "Compiled hot loops of the pipeline (see the comment at the top of _native.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    crc_init();
    s_buy = PyUnicode_InternFromString("buy");
    s_sell = PyUnicode_InternFromString("sell");
    zero = PyLong_FromLong(0);
    fmt_big = PyLong_FromString("1" "000000000000000000000000000000000000000000000000000000000000"
                                "000000000000000000000000000000000000000000000000000000000000",
                                NULL, 10); /* 10**120: far above any price, far below str()'s limit */
    if (s_buy == NULL || s_sell == NULL || zero == NULL || fmt_big == NULL || intern_names() < 0 ||
        intern_candle_names() < 0 || intern_frame_names() < 0)
        return NULL;
    if (PyType_Ready(&FeedBookType) < 0 || PyType_Ready(&TallyType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddObjectRef(m, "FeedBook", (PyObject *)&FeedBookType) < 0 ||
                      PyModule_AddObjectRef(m, "Tally", (PyObject *)&TallyType) < 0))
        Py_CLEAR(m);
    return m;
}
