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
 * exchanges' book checksums.
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
static int fast_units(const char *s, Py_ssize_t n, unsigned __int128 *units, int *dp)
{
    unsigned __int128 v = 0;
    int digits = 0, frac = -1;
    if (n == 0 || n > MAX_CHARS || s[0] < '0' || s[0] > '9')
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (frac >= 0)
                frac++;
            if (v == 0 && c == '0')
                continue; /* leading zeros */
            if (++digits > 38)
                return 0;
            v = v * 10 + (unsigned)(c - '0');
        } else if (c == '.' && frac < 0) {
            frac = 0;
        } else {
            return 0;
        }
    }
    int d = frac < 0 ? 0 : frac;
    if (d > SCALE || digits + SCALE - d > 38)
        return 0;
    for (int k = d; k < SCALE; k++)
        v *= 10;
    *units = v;
    *dp = d;
    return 1;
}

static PyObject *long_of(unsigned __int128 v)
{
    if (v <= (unsigned __int128)ULLONG_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)v);
#if PY_VERSION_HEX >= 0x030D0000
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
        PyObject *px_s = PyUnicode_FromStringAndSize(px, px_end - px);
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
        PyObject *qty_s = PyUnicode_FromStringAndSize(qty, qty_end - qty);
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
        append_new(cols[IDS], PyUnicode_FromStringAndSize(s, e - s)) < 0 ||
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
static PyObject *scan_ids(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan_ids(ids: list, start, stop, floor)");
        return NULL;
    }
    PyObject *ids = args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t stop = PyLong_AsSsize_t(args[2]);
    if (stop == -1 && PyErr_Occurred())
        return NULL;
    long long floor = PyLong_AsLongLong(args[3]);
    if (floor == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0)
        start = 0;
    if (stop > PyList_GET_SIZE(ids))
        stop = PyList_GET_SIZE(ids);
    int fresh = 1;
    long long top = floor, prev = floor;
    for (Py_ssize_t i = start; i < stop; i++) {
        PyObject *s = PyList_GET_ITEM(ids, i);
        if (PyUnicode_CheckExact(s) && PyUnicode_READY(s) < 0)
            return NULL;
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

static int set_level(PyObject *d, PyObject *head, PyObject *edge, int bid, PyObject *lv)
{
    if (!PyTuple_CheckExact(lv) || PyTuple_GET_SIZE(lv) != 4 ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(lv, 0))) {
        PyErr_SetString(PyExc_TypeError, "a level is a (int key, px, qty units, qty) tuple");
        return -1;
    }
    PyObject *key = PyTuple_GET_ITEM(lv, 0);
    int nonzero = PyObject_IsTrue(PyTuple_GET_ITEM(lv, 2));
    int has = nonzero < 0 ? -1 : PyDict_Contains(d, key);
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
    PyObject *v = PyTuple_Pack(2, PyTuple_GET_ITEM(lv, 1), PyTuple_GET_ITEM(lv, 3));
    if (v == NULL)
        return -1;
    int r = PyDict_SetItem(d, key, v);
    Py_DECREF(v);
    return r;
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
static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
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

PyDoc_STRVAR(scan_ids_doc,
             "scan_ids(ids, start, stop, floor) -> (fresh, top): see operators/ticker.py.");

PyDoc_STRVAR(fmt_doc, "fmt(units, dp, scale=18) -> str: operators.fixed.fmt (see there).");

static PyMethodDef methods[] = {
    {"fmt", (PyCFunction)(void (*)(void))fmt, METH_FASTCALL | METH_KEYWORDS, fmt_doc},
    {"scan_ids", (PyCFunction)(void (*)(void))scan_ids, METH_FASTCALL, scan_ids_doc},
    {"set_fmt_fallback", set_fmt_fallback, METH_O, "The Python fmt, for the uncommon cases."},
    {"decode_trades", decode_trades, METH_VARARGS, decode_trades_doc},
    {"book_levels", (PyCFunction)(void (*)(void))book_levels, METH_FASTCALL, book_levels_doc},
    {"set_levels", (PyCFunction)(void (*)(void))set_levels, METH_FASTCALL, set_levels_doc},
    {"side_top", (PyCFunction)(void (*)(void))side_top, METH_FASTCALL, side_top_doc},
    {"kraken_crc", (PyCFunction)(void (*)(void))kraken_crc, METH_FASTCALL, kraken_crc_doc},
    {"okx_crc", (PyCFunction)(void (*)(void))okx_crc, METH_FASTCALL, okx_crc_doc},
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
    if (s_buy == NULL || s_sell == NULL || zero == NULL || fmt_big == NULL)
        return NULL;
    return PyModule_Create(&module);
}
