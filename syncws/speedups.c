/*
 * C accelerator for syncws, built as the extension module syncws._speedups:
 * WebSocket payload masking (RFC 6455, section 5.3) for syncws.masking, and
 * the two hot paths of syncws.framing, parsing the common frames and
 * serializing a frame into one bytes object.
 *
 * Theory of operation
 * -------------------
 * Masking XORs byte i of a payload with byte i % 4 of a 4-byte key.  Copied
 * twice into a 64-bit word (or eight times into a 128-bit SSE2 register), the
 * key lines up with any block that starts at an offset multiple of 4, so the
 * payload is processed from its first byte in wide blocks, then the last
 * 0 to 7 bytes one at a time.  Loads and stores are unaligned (memcpy, or
 * _mm_loadu/_mm_storeu) so any buffer alignment works; compilers turn the
 * fixed-size memcpy calls into single moves.
 *
 * parse_simple_frames walks a buffer of received frames while each is a
 * whole, uncompressed text or binary message (the frames the connection
 * delivers without looking at its state) and builds each message with one
 * copy: a binary payload is unmasked straight into its bytes object, a text
 * one is decoded by PyUnicode_DecodeUTF8 from the buffer, or from a scratch
 * copy when it had to be unmasked.  It stops at any other frame and leaves
 * it to the Python code, which knows every rule; so this file knows only
 * what makes a frame simple.
 *
 * pack_frame writes a header and a (masked) payload into one new bytes
 * object, sized up front: one allocation, one pass over the payload.  A
 * text payload may be a str: an ASCII one (the usual message) is its own
 * UTF-8 and goes into the frame straight from the str, so that send()
 * makes no bytes object to encode it.
 *
 * PayloadBuffer is a writable buffer over a bytes object that nobody else
 * has seen yet: a large frame's payload is received into it (recv_into,
 * then unmasked in place) and take() hands the bytes object over as the
 * message, so its bytes are neither zeroed first nor copied last.  It is
 * the one place where this file writes into a bytes object after creating
 * it, and it stays sound because the object escapes only through take(),
 * which refuses while a buffer export (a memoryview) is alive, and after
 * which the buffer is empty.
 *
 * send_nowait makes the first try of a write: one send(2) with
 * MSG_DONTWAIT on a plain socket's descriptor, without socket.send()'s
 * argument parsing, nor an exception when the buffer is full (POSIX only).
 *
 * Every function mirrors a pure-Python one (masking.py_apply_mask,
 * masking.py_apply_mask_inplace, framing.py_parse_simple_frames,
 * framing.py_pack_frame, transport.py_send_nowait) exactly, errors
 * included, and PayloadBuffer mirrors payload.PyPayloadBuffer;
 * tests/test_masking.py, tests/test_framing_speedups.py,
 * tests/test_transport.py and tests/test_payload.py check that they agree.
 *
 * Threads: above GIL_RELEASE_THRESHOLD bytes the XOR loop runs without the
 * GIL, so other Python threads (the reader thread of another connection,
 * say) keep running while a big message is masked.  That is safe because the
 * loop touches only memory pinned by a Py_buffer export (which stops a
 * bytearray from being resized or freed) or a bytes object that no other
 * thread has seen yet, plus a local copy of the key.  pack_frame masks the
 * same way.  parse_simple_frames keeps the GIL throughout: it appends to a
 * Python list as it goes, and payloads up to the connection's size limit
 * (max_size) are short work to unmask.  send_nowait
 * keeps the GIL around send(2) up to GIL_RELEASE_THRESHOLD bytes: a send
 * that can't block takes microseconds, less than handing the GIL to
 * another thread and waiting to get it back among thousands (the gate
 * below); above, it lets the GIL go, as socket.send() does, reading memory
 * pinned the same way.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#ifndef _WIN32
#include <errno.h>
#include <sys/socket.h>
#include <time.h>
#endif
#ifdef __linux__
#include <sched.h>
#include <semaphore.h>
#endif

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Below this size, dropping and retaking the GIL costs more than the XOR,
 * or than a send(2) that doesn't block. */
#define GIL_RELEASE_THRESHOLD (64 * 1024)

/*
 * XOR len bytes of src with the repeating key into dst.  src and dst may be
 * the same pointer (in-place masking) but must not otherwise overlap.
 * Touches no Python object, so it may run without the GIL.
 */
static void
xor_mask(const unsigned char *src, unsigned char *dst, Py_ssize_t len,
         const unsigned char key[4])
{
    unsigned char key8[8];
    uint64_t key64;
    Py_ssize_t i = 0;

    memcpy(key8, key, 4);
    memcpy(key8 + 4, key, 4);
    memcpy(&key64, key8, 8);

#ifdef __SSE2__
    {
        /* Four independent 16-byte blocks per iteration keep several loads
         * in flight, faster than one block per iteration on payloads of a
         * few kilobytes (bench/NOTES.rst, "Figures that were in code
         * comments"), the same beyond. */
        const __m128i key128 = _mm_set1_epi64x((long long)key64);

        for (; len - i >= 64; i += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
            __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
            _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, key128));
            _mm_storeu_si128((__m128i *)(dst + i + 16), _mm_xor_si128(b, key128));
            _mm_storeu_si128((__m128i *)(dst + i + 32), _mm_xor_si128(c, key128));
            _mm_storeu_si128((__m128i *)(dst + i + 48), _mm_xor_si128(d, key128));
        }
        for (; len - i >= 16; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
            _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, key128));
        }
    }
#endif

    /* Without SSE2 this is the main loop, and compilers vectorize it. */
    for (; len - i >= 8; i += 8) {
        uint64_t word;
        memcpy(&word, src + i, 8);
        word ^= key64;
        memcpy(dst + i, &word, 8);
    }
    /* i is a multiple of 8 here, so the key phase restarts at key[0]. */
    for (; i < len; i++) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

/* Same as xor_mask, without the GIL when the payload is large enough. */
static void
xor_mask_maybe_nogil(const unsigned char *src, unsigned char *dst,
                     Py_ssize_t len, const unsigned char key[4])
{
    if (len > GIL_RELEASE_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        xor_mask(src, dst, len, key);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_mask(src, dst, len, key);
    }
}

/*
 * Copy the masking key out of a bytes-like object into key.  Copying guards
 * against a key that aliases the buffer being masked in place.
 * Returns 0 on success, -1 with an exception set.
 */
static int
parse_key(PyObject *obj, unsigned char key[4])
{
    Py_buffer view;
    Py_ssize_t len;

    /* The usual case: a bytes object straight from os.urandom(4). */
    if (PyBytes_CheckExact(obj)) {
        len = PyBytes_GET_SIZE(obj);
        if (len == 4) {
            memcpy(key, PyBytes_AS_STRING(obj), 4);
            return 0;
        }
    }
    else {
        /* PyBUF_FULL_RO accepts any exporter, strided ones included, like
         * memoryview(mask).tobytes() in the pure-Python version. */
        if (PyObject_GetBuffer(obj, &view, PyBUF_FULL_RO) < 0) {
            return -1;
        }
        len = view.len;
        if (len == 4 && PyBuffer_ToContiguous(key, &view, 4, 'C') < 0) {
            PyBuffer_Release(&view);
            return -1;
        }
        PyBuffer_Release(&view);
        if (len == 4) {
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "mask must be exactly 4 bytes long, got %zd bytes", len);
    return -1;
}

/*
 * Copy the 4-byte masking key at offset of a pool of random bytes (a bytes
 * object, as the connection keeps them) into key: the connection's way of
 * handing over a key without slicing it out first.  Other bytes-likes are
 * read as parse_key would read the slice.
 * Returns 0 on success, -1 with an exception set.
 */
static int
parse_key_at(PyObject *pool, PyObject *offset_obj, unsigned char key[4])
{
    Py_buffer view;
    Py_ssize_t offset, len;
    int result = -1;

    offset = PyNumber_AsSsize_t(offset_obj, PyExc_OverflowError);
    if (offset == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (PyBytes_CheckExact(pool)) {
        len = PyBytes_GET_SIZE(pool);
        if (offset >= 0 && offset <= len - 4) {
            memcpy(key, PyBytes_AS_STRING(pool) + offset, 4);
            return 0;
        }
    }
    else {
        if (PyObject_GetBuffer(pool, &view, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        len = view.len;
        if (offset >= 0 && offset <= len - 4) {
            memcpy(key, (const char *)view.buf + offset, 4);
            result = 0;
        }
        PyBuffer_Release(&view);
        if (result == 0) {
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "no 4-byte mask at offset %zd of %zd bytes", offset, len);
    return -1;
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask($module, data, mask, /)\n"
"--\n"
"\n"
"Mask or unmask data with mask; C implementation.\n"
"\n"
"Releases the GIL on payloads larger than 64 KiB: a mutable data buffer\n"
"must not be modified by another thread meanwhile.\n"
"\n"
"Args:\n"
"    data: The payload; any bytes-like object, masked as its raw bytes.\n"
"    mask: The 4-byte masking key; any bytes-like object.\n"
"\n"
"Returns:\n"
"    A new bytes object, data[i] ^ mask[i % 4] for each byte.\n"
"\n"
"Raises:\n"
"    TypeError: If data or mask is not a bytes-like object.\n"
"    ValueError: If mask is not exactly 4 bytes long.\n");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer view;
    PyObject *result;
    unsigned char *out;

    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "apply_mask() takes exactly 2 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (parse_key(args[1], key) < 0) {
        return NULL;
    }

    /* Fast path for bytes: no buffer export to acquire and release. */
    if (PyBytes_CheckExact(args[0])) {
        Py_ssize_t len = PyBytes_GET_SIZE(args[0]);

        result = PyBytes_FromStringAndSize(NULL, len);
        if (result == NULL) {
            return NULL;
        }
        /* bytes are immutable, so reading args[0] without the GIL is safe. */
        xor_mask_maybe_nogil((const unsigned char *)PyBytes_AS_STRING(args[0]),
                             (unsigned char *)PyBytes_AS_STRING(result),
                             len, key);
        return result;
    }

    if (PyObject_GetBuffer(args[0], &view, PyBUF_FULL_RO) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, view.len);
    if (result == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    if (PyBuffer_IsContiguous(&view, 'C')) {
        xor_mask_maybe_nogil((const unsigned char *)view.buf, out, view.len,
                             key);
    }
    else {
        /* A strided memoryview: gather it into the result, then mask there.
         * Rare, so two passes are fine. */
        if (PyBuffer_ToContiguous(out, &view, view.len, 'C') < 0) {
            Py_DECREF(result);
            PyBuffer_Release(&view);
            return NULL;
        }
        xor_mask_maybe_nogil(out, out, view.len, key);
    }
    PyBuffer_Release(&view);
    return result;
}

/*
 * Acquire a writable, C-contiguous buffer over obj, with the same TypeErrors
 * as _writable_byte_view() in masking.py.  Returns 0 on success, -1 with an
 * exception set.
 */
static int
get_writable_buffer(PyObject *obj, Py_buffer *view)
{
    /* PyBUF_STRIDES lets a strided memoryview through, so that it is
     * reported as such below rather than as a bare BufferError. */
    if (PyObject_GetBuffer(obj, view, PyBUF_STRIDES | PyBUF_WRITABLE) == 0) {
        if (PyBuffer_IsContiguous(view, 'C')) {
            return 0;
        }
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError,
                        "buffer must be C-contiguous, got a strided memoryview");
        return -1;
    }
    /* Exporters refuse PyBUF_WRITABLE on read-only memory with BufferError.
     * Ask again read-only to tell that case apart from other failures, and
     * report it as the TypeError a wrong kind of argument deserves. */
    if (PyErr_ExceptionMatches(PyExc_BufferError)) {
        Py_buffer probe;
        int readonly = 0;
        /* The C API may not be called with an exception set: park it. */
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
#else
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
#endif
        if (PyObject_GetBuffer(obj, &probe, PyBUF_FULL_RO) == 0) {
            readonly = probe.readonly;
            PyBuffer_Release(&probe);
        }
        else {
            PyErr_Clear();
        }
#if PY_VERSION_HEX >= 0x030C0000
        if (readonly) {
            Py_XDECREF(exc);
        }
        else {
            PyErr_SetRaisedException(exc);
        }
#else
        if (readonly) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
        }
        else {
            PyErr_Restore(type, value, traceback);
        }
#endif
        if (readonly) {
            PyErr_Format(PyExc_TypeError,
                         "buffer must be writable (e.g. a bytearray), "
                         "got a read-only %.200s",
                         Py_TYPE(obj)->tp_name);
        }
    }
    return -1;
}

PyDoc_STRVAR(apply_mask_inplace_doc,
"apply_mask_inplace($module, buffer, mask, /)\n"
"--\n"
"\n"
"XOR buffer with mask in place; C implementation.\n"
"\n"
"Releases the GIL on buffers larger than 64 KiB: the buffer must not be\n"
"modified by another thread meanwhile.\n"
"\n"
"Args:\n"
"    buffer: A writable, C-contiguous bytes-like object, such as a\n"
"        bytearray or a writable memoryview of one.\n"
"    mask: The 4-byte masking key; any bytes-like object.\n"
"\n"
"Raises:\n"
"    TypeError: If buffer is not a writable C-contiguous bytes-like\n"
"        object, or mask is not bytes-like.\n"
"    ValueError: If mask is not exactly 4 bytes long.\n");

static PyObject *
apply_mask_inplace(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer view;

    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "apply_mask_inplace() takes exactly 2 arguments "
                     "(%zd given)",
                     nargs);
        return NULL;
    }
    /* The key first, as in the pure-Python version, so that both raise the
     * same error when both arguments are wrong. */
    if (parse_key(args[1], key) < 0) {
        return NULL;
    }
    if (get_writable_buffer(args[0], &view) < 0) {
        return NULL;
    }
    xor_mask_maybe_nogil((const unsigned char *)view.buf,
                         (unsigned char *)view.buf, view.len, key);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/*
 * Acquire a C-contiguous read-only buffer over obj, with the same TypeErrors
 * as the pure-Python functions in framing.py.  Returns 0 on success, -1
 * with an exception set.
 */
static int
get_contiguous_buffer(PyObject *obj, Py_buffer *view)
{
    /* PyBUF_STRIDES lets a strided memoryview through, so that it is
     * reported as such below rather than as a bare BufferError. */
    if (PyObject_GetBuffer(obj, view, PyBUF_STRIDES) < 0) {
        return -1;
    }
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError,
                        "buffer must be C-contiguous, got a strided memoryview");
        return -1;
    }
    return 0;
}

/* Room for unmasking a small text payload before decoding it, without a
 * heap allocation; a longer one gets a heap buffer, kept for the rest of the
 * call.  Small on purpose: every reader thread of a server runs this, and
 * stack memory once touched stays resident: a page-sized one cost each
 * thread a resident page more (bench/NOTES.rst, "Figures that were in
 * code comments"). */
#define SCRATCH_SIZE 256

PyDoc_STRVAR(parse_simple_frames_doc,
"parse_simple_frames($module, buffer, position, end, masked, limit, out, /)\n"
"--\n"
"\n"
"Parse the run of simple frames at position; C implementation.\n"
"\n"
"See syncws.framing.py_parse_simple_frames, which this mirrors.\n");

/*
 * The loop stops at the first frame that isn't simple, exactly as in
 * py_parse_simple_frames: a first byte other than 0x81/0x82 (FIN, RSV clear,
 * text or binary), the wrong mask bit, a header or payload cut by end, a
 * payload over limit, or invalid UTF-8 in a text payload (the
 * UnicodeDecodeError is dropped: the caller's general path reports it).
 *
 * The bytes are read straight from the buffer: a bytes object is immutable,
 * and any other exporter is pinned by the Py_buffer export (a bytearray
 * can't be resized meanwhile).  Nothing in the loop runs Python code.
 */
/*
 * parse_simple_frames()'s scalar arguments (position, end, masked, limit)
 * as C values.  Converting them may run Python code (__index__, __bool__),
 * which must not happen while a view is held: they come first.  Returns 0,
 * or -1 with an exception set.
 */
static int
simple_frames_args(PyObject *const *args, Py_ssize_t *position,
                   Py_ssize_t *end, unsigned char *mask_bit,
                   long long *limit)
{
    int overflow, masked;

    /* Clipped rather than OverflowError: any out-of-range value then fails
     * the caller's range check with the ValueError Python raises. */
    *position = PyNumber_AsSsize_t(args[1], NULL);
    if (*position == -1 && PyErr_Occurred()) {
        return -1;
    }
    *end = PyNumber_AsSsize_t(args[2], NULL);
    if (*end == -1 && PyErr_Occurred()) {
        return -1;
    }
    masked = PyObject_IsTrue(args[3]);
    if (masked < 0) {
        return -1;
    }
    *mask_bit = masked ? 0x80 : 0;
    /* A limit beyond LLONG_MAX is no limit: no buffer holds a frame that
     * large.  A negative one accepts nothing. */
    *limit = PyLong_AsLongLongAndOverflow(args[4], &overflow);
    if (*limit == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0) {
        *limit = LLONG_MAX;
    }
    else if (overflow < 0) {
        *limit = -1;
    }
    return 0;
}

/*
 * The header of the frame at buf[position:end] when the frame is simple
 * (first byte 0x81 or 0x82, the expected mask bit) and whole, its payload
 * within limit: sets *start to where its payload (after the mask key)
 * starts and *length to the payload's length, and returns 1; else 0.
 */
static inline int
simple_frame_at(const unsigned char *buf, Py_ssize_t position,
                Py_ssize_t end, unsigned char mask_bit, long long limit,
                Py_ssize_t *start, uint64_t *length)
{
    unsigned char first = buf[position];
    unsigned char second = buf[position + 1];

    if ((first != 0x81 && first != 0x82) || (second & 0x80) != mask_bit) {
        return 0;
    }
    *length = second & 0x7F;
    *start = position + 2;
    if (*length == 126) {
        *start = position + 4;
        if (*start > end) {
            return 0;
        }
        *length = ((uint64_t)buf[position + 2] << 8) | buf[position + 3];
    }
    else if (*length == 127) {
        int i;

        *start = position + 10;
        if (*start > end) {
            return 0;
        }
        *length = 0;
        for (i = 2; i < 10; i++) {
            *length = (*length << 8) | buf[position + i];
        }
    }
    if (mask_bit) {
        *start += 4;
    }
    /* Compared as unsigned: a 64-bit length may exceed any Py_ssize_t. */
    return !(*start > end || *length > (uint64_t)(end - *start)
             || limit < 0 || *length > (uint64_t)limit);
}

/*
 * The message a simple frame carries: str for text (first byte 0x81),
 * bytes for binary, its payload unmasked with the 4-byte key before it
 * when mask_bit is set.  Masked text is unmasked into *scratch, then
 * decoded from it: *scratch is stack_scratch (SCRATCH_SIZE bytes) until a
 * longer payload needs a heap buffer, which replaces it (*scratch_size
 * says how large; the caller frees it).  Returns a new reference, or NULL
 * with an exception set (UnicodeDecodeError for invalid UTF-8).
 */
static inline PyObject *
simple_message(unsigned char first, const unsigned char *payload,
               Py_ssize_t length, unsigned char mask_bit,
               unsigned char *stack_scratch, unsigned char **scratch,
               Py_ssize_t *scratch_size)
{
    PyObject *message;

    if (!mask_bit) {
        return first == 0x81
            ? PyUnicode_DecodeUTF8((const char *)payload, length, "strict")
            : PyBytes_FromStringAndSize((const char *)payload, length);
    }
    if (first == 0x82) {
        /* Unmasked straight into the new bytes object: one copy. */
        message = PyBytes_FromStringAndSize(NULL, length);
        if (message != NULL) {
            xor_mask(payload, (unsigned char *)PyBytes_AS_STRING(message),
                     length, payload - 4);
        }
        return message;
    }
    if (length > *scratch_size) {
        unsigned char *bigger = PyMem_Malloc((size_t)length);

        if (bigger == NULL) {
            return PyErr_NoMemory();
        }
        if (*scratch != stack_scratch) {
            PyMem_Free(*scratch);
        }
        *scratch = bigger;
        *scratch_size = length;
    }
    xor_mask(payload, *scratch, length, payload - 4);
    return PyUnicode_DecodeUTF8((const char *)*scratch, length, "strict");
}

static PyObject *
parse_simple_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    int have_view = 0;
    const unsigned char *buf;
    Py_ssize_t size, position, end;
    long long limit;
    unsigned char mask_bit;
    PyObject *out;
    unsigned char stack_scratch[SCRATCH_SIZE];
    unsigned char *scratch = stack_scratch;
    Py_ssize_t scratch_size = SCRATCH_SIZE;
    PyObject *result = NULL;

    (void)module;
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError,
                     "parse_simple_frames() takes exactly 6 arguments "
                     "(%zd given)",
                     nargs);
        return NULL;
    }
    out = args[5];
    if (!PyList_CheckExact(out)) {
        PyErr_Format(PyExc_TypeError, "out must be a list, got %.200s",
                     Py_TYPE(out)->tp_name);
        return NULL;
    }
    if (simple_frames_args(args, &position, &end, &mask_bit, &limit) < 0) {
        return NULL;
    }

    if (PyBytes_CheckExact(args[0])) {
        buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
        size = PyBytes_GET_SIZE(args[0]);
    }
    else {
        if (get_contiguous_buffer(args[0], &view) < 0) {
            return NULL;
        }
        have_view = 1;
        buf = (const unsigned char *)view.buf;
        size = view.len;
    }
    if (position < 0 || position > end || end > size) {
        PyErr_Format(PyExc_ValueError,
                     "expected 0 <= position <= end <= len(buffer) = %zd, "
                     "got position=%zd, end=%zd",
                     size, position, end);
        goto done;
    }

    while (end - position >= 2) {
        unsigned char first = buf[position];
        uint64_t length;
        Py_ssize_t start;
        const unsigned char *payload;
        PyObject *message;

        if (!simple_frame_at(buf, position, end, mask_bit, limit, &start,
                             &length)) {
            break;
        }
        payload = buf + start;
        message = simple_message(first, payload, (Py_ssize_t)length,
                                 mask_bit, stack_scratch, &scratch,
                                 &scratch_size);
        if (message == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                goto done;
            }
            PyErr_Clear();
            break;
        }
        if (PyList_Append(out, message) < 0) {
            Py_DECREF(message);
            goto done;
        }
        Py_DECREF(message);
        position = start + (Py_ssize_t)length;
    }
    result = PyLong_FromSsize_t(position);

done:
    if (scratch != stack_scratch) {
        PyMem_Free(scratch);
    }
    if (have_view) {
        PyBuffer_Release(&view);
    }
    return result;
}

/*
 * Point *data and *length at the UTF-8 of str, as str.encode() would give
 * it (strict: a lone surrogate raises UnicodeEncodeError).  An ASCII str is
 * its own UTF-8 and is read in place, with no bytes object made and freed;
 * any other is encoded into a new bytes object, left in *encoded for the
 * caller to release.  A str is immutable, so its data may be read without
 * the GIL, as a bytes object's.  Returns 0 on success, -1 with an
 * exception set.
 */
static int
utf8_of(PyObject *str, PyObject **encoded, const char **data,
        Py_ssize_t *length)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(str) < 0) {
        return -1;
    }
#endif
    if (PyUnicode_IS_ASCII(str)) {
        *data = (const char *)PyUnicode_DATA(str);
        *length = PyUnicode_GET_LENGTH(str);
        return 0;
    }
    *encoded = PyUnicode_AsUTF8String(str);
    if (*encoded == NULL) {
        return -1;
    }
    *data = PyBytes_AS_STRING(*encoded);
    *length = PyBytes_GET_SIZE(*encoded);
    return 0;
}

PyDoc_STRVAR(pack_frame_doc,
"pack_frame($module, first, payload, mask_key, key_offset=None, /)\n"
"--\n"
"\n"
"Serialize a frame into one bytes object; C implementation.\n"
"\n"
"See syncws.framing.py_pack_frame, which this mirrors.  Releases the GIL\n"
"while masking payloads larger than 64 KiB: a mutable payload buffer must\n"
"not be modified by another thread meanwhile.\n");

/*
 * pack_frame()'s first header byte, as operator.index(obj) in Python;
 * clipped rather than OverflowError, so that any out-of-range value is a
 * ValueError.  Returns 0, or -1 with an exception set.
 */
static int
first_header_byte(PyObject *obj, Py_ssize_t *first)
{
    PyObject *index = PyNumber_Index(obj);

    if (index == NULL) {
        return -1;
    }
    *first = PyNumber_AsSsize_t(index, NULL);
    if (*first < 0 || *first > 0xFF) {
        PyErr_Format(PyExc_ValueError,
                     "the first header byte must be in 0..255, got %S",
                     index);
        Py_DECREF(index);
        return -1;
    }
    Py_DECREF(index);
    return 0;
}

/*
 * Write a frame's header at out: the first byte, the payload length in its
 * shortest encoding, and the mask key unless key is NULL.  out has room
 * for header_size bytes, as pack_frame() computes it.
 */
static void
write_frame_header(unsigned char *out, Py_ssize_t header_size,
                   unsigned char first, Py_ssize_t length,
                   const unsigned char *key)
{
    out[0] = first;
    if (length < 126) {
        out[1] = (unsigned char)length;
    }
    else if (length < 0x10000) {
        out[1] = 126;
        out[2] = (unsigned char)(length >> 8);
        out[3] = (unsigned char)length;
    }
    else {
        uint64_t value = (uint64_t)length;
        int i;

        out[1] = 127;
        for (i = 9; i >= 2; i--) {
            out[i] = (unsigned char)value;
            value >>= 8;
        }
    }
    if (key != NULL) {
        out[1] |= 0x80;
        memcpy(out + header_size - 4, key, 4);
    }
}

static PyObject *
pack_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    int masked;
    Py_ssize_t first;
    Py_buffer view;
    int have_view = 0;
    const unsigned char *payload = NULL;
    Py_ssize_t length = 0, header_size;
    int text_payload;
    PyObject *encoded = NULL;  /* a non-ASCII str payload's UTF-8 */
    PyObject *result = NULL;
    unsigned char *out;

    (void)module;
    if (nargs != 3 && nargs != 4) {
        PyErr_Format(PyExc_TypeError,
                     "pack_frame() takes 3 or 4 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (first_header_byte(args[0], &first) < 0) {
        return NULL;
    }
    /* A str is encoded first, as the Python version does; then the key
     * before any other payload, as apply_mask() checks them. */
    text_payload = PyUnicode_Check(args[1]);
    if (text_payload
        && utf8_of(args[1], &encoded, (const char **)&payload, &length) < 0) {
        return NULL;
    }
    masked = args[2] != Py_None;
    if (masked) {
        if (nargs == 4 && args[3] != Py_None) {
            if (parse_key_at(args[2], args[3], key) < 0) {
                goto done;
            }
        }
        else if (parse_key(args[2], key) < 0) {
            goto done;
        }
    }
    if (text_payload) {
        /* payload and length point at its UTF-8 already. */
    }
    else if (PyBytes_CheckExact(args[1])) {
        payload = (const unsigned char *)PyBytes_AS_STRING(args[1]);
        length = PyBytes_GET_SIZE(args[1]);
    }
    else {
        /* PyBUF_FULL_RO accepts strided memoryviews, gathered below, as
         * Python's apply_mask() and bytes concatenation accept them. */
        if (PyObject_GetBuffer(args[1], &view, PyBUF_FULL_RO) < 0) {
            goto done;
        }
        have_view = 1;
        payload = (const unsigned char *)view.buf;
        length = view.len;
    }

    header_size = length < 126 ? 2 : length < 0x10000 ? 4 : 10;
    if (masked) {
        header_size += 4;
    }
    result = PyBytes_FromStringAndSize(NULL, header_size + length);
    if (result == NULL) {
        goto done;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    write_frame_header(out, header_size, (unsigned char)first, length,
                       masked ? key : NULL);
    out += header_size;
    if (have_view && !PyBuffer_IsContiguous(&view, 'C')) {
        /* A strided memoryview: gather it, then mask in place.  Rare. */
        if (PyBuffer_ToContiguous(out, &view, length, 'C') < 0) {
            Py_CLEAR(result);
            goto done;
        }
        payload = out;
    }
    if (masked) {
        xor_mask_maybe_nogil(payload, out, length, key);
    }
    else if (payload != out) {
        memcpy(out, payload, (size_t)length);
    }

done:
    if (have_view) {
        PyBuffer_Release(&view);
    }
    Py_XDECREF(encoded);
    return result;
}

/* The module's state: the one name the socket functions look up per call,
 * queue.Empty, and the gate. */
typedef struct {
    PyObject *fileno;       /* "fileno", interned */
    PyObject *empty;        /* queue.Empty, which SimpleQueue.get() raises */
    /* The gate (see the theory of operation; unused without a GIL): on
     * Linux the queue's last waiter (NULL when free), elsewhere a lock. */
#ifdef __linux__
    struct gate_waiter *gate_tail;
#else
    PyThread_type_lock gate;
#endif
} speedups_state;

#ifdef MSG_DONTWAIT
PyDoc_STRVAR(send_nowait_doc,
"send_nowait($module, sock, data, /)\n"
"--\n"
"\n"
"Send what the socket's buffer takes of data now, without waiting; C\n"
"implementation.\n"
"\n"
"See syncws.transport.py_send_nowait, which this mirrors for a plain\n"
"socket.socket: one send(2) with MSG_DONTWAIT, without the GIL.\n");

static PyObject *
send_nowait(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    speedups_state *state = PyModule_GetState(module);
    PyObject *fileno;
    long fd;
    Py_buffer view;
    int have_view = 0;
    const char *data;
    Py_ssize_t length, sent;
    int error;
    PyObject *whole, *result = NULL;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "send_nowait() takes exactly 2 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    /* Asked per call, as socket.send() does: a closed socket says -1, and
     * send(2) then fails with EBADF, as socket.send() does. */
    fileno = PyObject_CallMethodNoArgs(args[0], state->fileno);
    if (fileno == NULL) {
        return NULL;
    }
    fd = PyLong_AsLong(fileno);
    Py_DECREF(fileno);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (PyBytes_CheckExact(args[1])) {
        data = PyBytes_AS_STRING(args[1]);
        length = PyBytes_GET_SIZE(args[1]);
    }
    else {
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        have_view = 1;
        data = (const char *)view.buf;
        length = view.len;
    }
    for (;;) {
        /* See the theory of operation ("Threads") for when the GIL is let
         * go: a small send(2) that can't block is over in microseconds. */
        if (length <= GIL_RELEASE_THRESHOLD) {
            sent = send((int)fd, data, (size_t)length, MSG_DONTWAIT);
            error = errno;
        }
        else {
            Py_BEGIN_ALLOW_THREADS
            sent = send((int)fd, data, (size_t)length, MSG_DONTWAIT);
            error = errno;
            Py_END_ALLOW_THREADS
        }
        if (sent >= 0) {
            break;
        }
        if (error == EINTR) {
            /* Run the signal handlers, then try again, as socket.send(). */
            if (PyErr_CheckSignals() < 0) {
                goto done;
            }
            continue;
        }
        if (error == EAGAIN || error == EWOULDBLOCK) {
            sent = 0;
            break;
        }
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    if (sent == length) {
        Py_INCREF(Py_None);
        result = Py_None;
        goto done;
    }
    whole = PyMemoryView_FromObject(args[1]);
    if (whole != NULL) {
        result = PySequence_GetSlice(whole, sent, PY_SSIZE_T_MAX);
        Py_DECREF(whole);
    }

done:
    if (have_view) {
        PyBuffer_Release(&view);
    }
    return result;
}
#endif  /* MSG_DONTWAIT */

/*
 * The gate (see the theory of operation above): gate_restore() is
 * PyEval_RestoreThread() for the blocking calls that every message goes
 * through.
 */
#if defined(Py_GIL_DISABLED)
#define gate_restore(state, save) PyEval_RestoreThread(save)
#elif defined(__linux__)
/*
 * On Linux the gate is a queue lock (Mellor-Crummey and Scott's): each
 * waiter sleeps on a semaphore of its own, in a list, and the holder hands
 * the gate to the one behind it.  First in, first out, strictly: with a
 * plain lock, a thread that arrives as the lock is let go takes it before
 * the sleeper woken for it, which goes back to sleep at the end of the
 * line, and with 10,000 busy connections some waited over 10 s
 * (docs/performance.rst).  A waiter's node lives on its own stack for as
 * long as it waits or holds the gate.
 */
struct gate_waiter {
    struct gate_waiter *next;   /* set by the one behind, then read by us */
    sem_t turn;                 /* posted by the one ahead, when it is ours */
};

static void
gate_restore(speedups_state *state, PyThreadState *save)
{
    struct gate_waiter me, *ahead, *behind;

    me.next = NULL;
    sem_init(&me.turn, 0, 0);
    ahead = __atomic_exchange_n(&state->gate_tail, &me, __ATOMIC_ACQ_REL);
    if (ahead != NULL) {
        __atomic_store_n(&ahead->next, &me, __ATOMIC_RELEASE);
        while (sem_wait(&me.turn) != 0) {
            /* EINTR: a signal; the handlers run once the GIL is back */
        }
    }
    PyEval_RestoreThread(save);
    behind = __atomic_load_n(&me.next, __ATOMIC_ACQUIRE);
    if (behind == NULL) {
        struct gate_waiter *expected = &me;

        if (__atomic_compare_exchange_n(&state->gate_tail, &expected, NULL, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            sem_destroy(&me.turn);
            return;  /* nobody behind */
        }
        /* One is queuing behind: it has swapped itself in as the tail and
         * links itself to us in a moment. */
        while ((behind = __atomic_load_n(&me.next, __ATOMIC_ACQUIRE)) == NULL) {
            sched_yield();
        }
    }
    sem_post(&behind->turn);
    sem_destroy(&me.turn);
}
#else
static void
gate_restore(speedups_state *state, PyThreadState *save)
{
    PyThread_type_lock gate = state->gate;

    PyThread_acquire_lock(gate, WAIT_LOCK);
    PyEval_RestoreThread(save);
    PyThread_release_lock(gate);
}
#endif

PyDoc_STRVAR(reset_gate_doc,
"reset_gate($module, /)\n"
"--\n"
"\n"
"Give the gate a new lock: for a child process after fork(), where a\n"
"thread of the parent may have held it.\n");

static PyObject *
reset_gate(PyObject *module, PyObject *unused)
{
#ifndef Py_GIL_DISABLED
    speedups_state *state = PyModule_GetState(module);
#ifdef __linux__
    /* The old queue's waiters are threads the child doesn't have. */
    state->gate_tail = NULL;
#else
    PyThread_type_lock gate = PyThread_allocate_lock();

    if (gate == NULL) {
        return PyErr_NoMemory();
    }
    /* The old lock is left alone: it may be held by a thread that the
     * child doesn't have, and freeing a held lock is undefined. */
    state->gate = gate;
#endif
#endif
    (void)module;
    (void)unused;
    Py_RETURN_NONE;
}

#ifndef _WIN32
/* The descriptor of a socket object, asked per call as socket.recv() does:
 * a closed socket says -1, and recv(2) then fails with EBADF. */
static int
socket_fd(speedups_state *state, PyObject *sock, int *fd)
{
    PyObject *fileno = PyObject_CallMethodNoArgs(sock, state->fileno);
    long value;

    if (fileno == NULL) {
        return -1;
    }
    value = PyLong_AsLong(fileno);
    Py_DECREF(fileno);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    *fd = (int)value;
    return 0;
}

/* One blocking recv(2) into buf, the GIL let go and the gate passed on the
 * way back; retried after the signal handlers when interrupted (PEP 475).
 * Returns the byte count, or -1 with an exception set. */
static Py_ssize_t
gated_recv(speedups_state *state, int fd, char *buf, Py_ssize_t size)
{
    Py_ssize_t received;
    int error;

    if (size == 0) {
        return 0;  /* as socket.recv(0): nothing to wait for */
    }
    for (;;) {
        PyThreadState *save = PyEval_SaveThread();
        received = recv(fd, buf, (size_t)size, 0);
        error = errno;
        gate_restore(state, save);
        if (received >= 0) {
            return received;
        }
        if (error != EINTR) {
            errno = error;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

PyDoc_STRVAR(recv_doc,
"recv($module, sock, size, /)\n"
"--\n"
"\n"
"sock.recv(size) on a blocking socket, passing the gate on the way back.\n");

static PyObject *
recv_gated(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    speedups_state *state = PyModule_GetState(module);
    PyObject *result;
    Py_ssize_t size, received;
    int fd;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "recv() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (socket_fd(state, args[0], &fd) < 0) {
        return NULL;
    }
    size = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) {
        return NULL;
    }
    received = gated_recv(state, fd, PyBytes_AS_STRING(result), size);
    if (received < 0) {
        Py_DECREF(result);
        return NULL;
    }
    if (received != size) {
        /* Shrunk in place, as socket.recv() does: nobody else has seen it. */
        _PyBytes_Resize(&result, received);
    }
    return result;
}

PyDoc_STRVAR(recv_into_doc,
"recv_into($module, sock, buffer, /)\n"
"--\n"
"\n"
"sock.recv_into(buffer) on a blocking socket, passing the gate on the way\n"
"back.\n");

static PyObject *
recv_into_gated(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    speedups_state *state = PyModule_GetState(module);
    Py_buffer view;
    Py_ssize_t received;
    int fd;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "recv_into() takes exactly 2 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (socket_fd(state, args[0], &fd) < 0) {
        return NULL;
    }
    /* The export pins the buffer (a bytearray can't be resized) while the
     * GIL is let go. */
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "recv_into() argument must be read-write bytes-like "
                     "object, not %.50s", Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    received = gated_recv(state, fd, (char *)view.buf, view.len);
    PyBuffer_Release(&view);
    if (received < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(received);
}

/*
 * SimpleQueue: queue.SimpleQueue's put, get and qsize, as CPython 3.11
 * implements them (a list, and a lock held while the queue is empty), with
 * the gate on the way back from a get() that waited.  The list and the
 * lock's bookkeeping are changed under the GIL, or the object's critical
 * section in free-threaded builds.  POSIX only, as the reads: the gate is
 * for the threads that they wake.
 */
#ifndef Py_BEGIN_CRITICAL_SECTION
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#endif

typedef struct {
    PyObject_HEAD
    speedups_state *state;    /* the module's (the type keeps it alive) */
    PyThread_type_lock lock;  /* acquired by get() while the queue is empty */
    int locked;               /* whether get() holds the lock */
    PyObject *items;          /* a list; the queue starts at items[head] */
    Py_ssize_t head;
} SimpleQueueObject;

PyDoc_STRVAR(simple_queue_doc,
"SimpleQueue()\n"
"--\n"
"\n"
"An unbounded FIFO queue: queue.SimpleQueue's put(), get() and qsize(),\n"
"with the gate on the way back from a get() that waited.\n");

static PyObject *
simple_queue_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    SimpleQueueObject *self;
    PyObject *module;

    if (PyTuple_GET_SIZE(args) != 0
        || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "SimpleQueue() takes no arguments");
        return NULL;
    }
    module = PyType_GetModule(type);
    if (module == NULL) {
        return NULL;
    }
    self = (SimpleQueueObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = PyModule_GetState(module);
    self->locked = 0;
    self->head = 0;
    self->items = PyList_New(0);
    if (self->items == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static int
simple_queue_traverse(SimpleQueueObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->items);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
simple_queue_clear(SimpleQueueObject *self)
{
    Py_CLEAR(self->items);
    return 0;
}

static void
simple_queue_dealloc(SimpleQueueObject *self)
{
    PyTypeObject *type = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->items);
    if (self->lock != NULL) {
        if (self->locked) {
            PyThread_release_lock(self->lock);
        }
        PyThread_free_lock(self->lock);
    }
    type->tp_free((PyObject *)self);
    Py_DECREF(type);  /* a heap type: each instance holds a reference */
}

PyDoc_STRVAR(simple_queue_put_doc,
"put($self, item, /)\n"
"--\n"
"\n"
"Append item, waking a get() that waits; never blocks.\n");

static PyObject *
simple_queue_put(SimpleQueueObject *self, PyObject *item)
{
    PyObject *result = Py_None;

    Py_BEGIN_CRITICAL_SECTION(self);
    if (PyList_Append(self->items, item) < 0) {
        result = NULL;
    }
    else if (self->locked) {
        /* A get() waits, or will find the lock free. */
        PyThread_release_lock(self->lock);
        self->locked = 0;
    }
    Py_END_CRITICAL_SECTION();
    Py_XINCREF(result);
    return result;
}

/* The first item, taken out; the caller checked that there is one. */
static PyObject *
simple_queue_pop(SimpleQueueObject *self)
{
    Py_ssize_t size = PyList_GET_SIZE(self->items);
    PyObject *item = PyList_GET_ITEM(self->items, self->head);

    Py_INCREF(Py_None);
    PyList_SET_ITEM(self->items, self->head, Py_None);
    self->head++;
    if (self->head > size - self->head) {
        /* More than half of the list is taken: reclaim it. */
        if (PyList_SetSlice(self->items, 0, self->head, NULL) < 0) {
            self->head--;
            PyList_SET_ITEM(self->items, self->head, item);
            Py_DECREF(Py_None);
            return NULL;
        }
        self->head = 0;
    }
    return item;
}

/* Microseconds on a monotonic clock, for get()'s deadline. */
static int64_t
monotonic_us(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

PyDoc_STRVAR(simple_queue_get_doc,
"get($self, /, block=True, timeout=None)\n"
"--\n"
"\n"
"Remove and return the first item, as queue.SimpleQueue.get().\n"
"\n"
"Raises:\n"
"    queue.Empty: block is false and the queue is empty, or no item came\n"
"        within timeout seconds.\n");

static PyObject *
simple_queue_get(SimpleQueueObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"block", "timeout", NULL};
    int block = 1;
    PyObject *timeout = Py_None, *item = NULL;
    PY_TIMEOUT_T microseconds = -1;  /* -1: no limit */
    int64_t deadline = 0;
    PyLockStatus status;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pO:get", keywords,
                                     &block, &timeout)) {
        return NULL;
    }
    if (!block) {
        microseconds = 0;
    }
    else if (timeout != Py_None) {
        double seconds = PyFloat_AsDouble(timeout);

        if (seconds == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if (Py_IS_NAN(seconds)) {
            /* As queue.SimpleQueue: converted, NaN would wait forever. */
            PyErr_SetString(PyExc_ValueError,
                            "Invalid value NaN (not a number)");
            return NULL;
        }
        if (seconds < 0) {
            PyErr_SetString(PyExc_ValueError,
                            "'timeout' must be a non-negative number");
            return NULL;
        }
        if (seconds * 1e6 >= (double)PY_TIMEOUT_MAX) {
            PyErr_SetString(PyExc_OverflowError,
                            "timeout value is too large");
            return NULL;
        }
        microseconds = (PY_TIMEOUT_T)(seconds * 1e6 + 0.999);  /* ceiling */
        deadline = monotonic_us() + microseconds;
    }

    Py_BEGIN_CRITICAL_SECTION(self);
    for (;;) {
        if (self->head < PyList_GET_SIZE(self->items)) {
            item = simple_queue_pop(self);
            break;
        }
        /* A try first, without letting the GIL go. */
        status = PyThread_acquire_lock_timed(self->lock, 0, 0);
        if (status == PY_LOCK_FAILURE && microseconds != 0) {
            PyThreadState *save = PyEval_SaveThread();
            status = PyThread_acquire_lock_timed(self->lock, microseconds, 1);
            gate_restore(self->state, save);
        }
        if (status == PY_LOCK_INTR && Py_MakePendingCalls() < 0) {
            break;  /* a signal handler raised */
        }
        if (status == PY_LOCK_FAILURE) {
            PyErr_SetNone(self->state->empty);
            break;
        }
        if (status == PY_LOCK_ACQUIRED) {
            self->locked = 1;
        }
        if (microseconds > 0) {
            microseconds = (PY_TIMEOUT_T)(deadline - monotonic_us());
            if (microseconds < 0) {
                microseconds = 0;
            }
        }
    }
    Py_END_CRITICAL_SECTION();
    return item;
}

PyDoc_STRVAR(simple_queue_qsize_doc,
"qsize($self, /)\n"
"--\n"
"\n"
"The number of items in the queue.\n");

static PyObject *
simple_queue_qsize(SimpleQueueObject *self, PyObject *unused)
{
    Py_ssize_t size;

    (void)unused;
    Py_BEGIN_CRITICAL_SECTION(self);
    size = PyList_GET_SIZE(self->items) - self->head;
    Py_END_CRITICAL_SECTION();
    return PyLong_FromSsize_t(size);
}

static PyMethodDef simple_queue_methods[] = {
    {"put", (PyCFunction)simple_queue_put, METH_O, simple_queue_put_doc},
    {"get", (PyCFunction)(void (*)(void))simple_queue_get,
     METH_VARARGS | METH_KEYWORDS, simple_queue_get_doc},
    {"qsize", (PyCFunction)simple_queue_qsize, METH_NOARGS,
     simple_queue_qsize_doc},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot simple_queue_slots[] = {
    {Py_tp_doc, (void *)simple_queue_doc},
    {Py_tp_new, (void *)simple_queue_new},
    {Py_tp_dealloc, (void *)simple_queue_dealloc},
    {Py_tp_traverse, (void *)simple_queue_traverse},
    {Py_tp_clear, (void *)simple_queue_clear},
    {Py_tp_methods, simple_queue_methods},
    {0, NULL},
};
#endif  /* _WIN32 */

/*
 * PayloadBuffer: see the theory of operation above.  The bytes object is
 * created uninitialized (PyBytes_FromStringAndSize(NULL, size)); its hash is
 * not computed until someone holds it, after take().
 */
typedef struct {
    PyObject_HEAD
    PyObject *bytes;        /* NULL once taken */
    Py_ssize_t exports;     /* live buffer exports; take() needs none */
} PayloadBufferObject;

PyDoc_STRVAR(payload_buffer_doc,
"PayloadBuffer(size, /)\n"
"--\n"
"\n"
"A writable buffer of size bytes that becomes a bytes object without a\n"
"copy; C implementation.\n"
"\n"
"See syncws.payload.PyPayloadBuffer, which this mirrors.\n");

static PyObject *
payload_buffer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t size;
    PayloadBufferObject *self;

    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError,
                        "PayloadBuffer() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "n:PayloadBuffer", &size)) {
        return NULL;
    }
    if (size < 0) {
        PyErr_Format(PyExc_ValueError,
                     "size must not be negative, got %zd", size);
        return NULL;
    }
    self = (PayloadBufferObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->bytes = PyBytes_FromStringAndSize(NULL, size);
    if (self->bytes == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->exports = 0;
    return (PyObject *)self;
}

static void
payload_buffer_dealloc(PayloadBufferObject *self)
{
    PyTypeObject *type = Py_TYPE(self);

    Py_XDECREF(self->bytes);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);  /* a heap type: each instance holds a reference */
}

static Py_ssize_t
payload_buffer_length(PayloadBufferObject *self)
{
    return self->bytes == NULL ? 0 : PyBytes_GET_SIZE(self->bytes);
}

static int
payload_buffer_getbuffer(PayloadBufferObject *self, Py_buffer *view,
                         int flags)
{
    /* Once taken, the buffer is empty, as a bytearray emptied by del. */
    static char nothing[1];
    char *data = self->bytes == NULL ? nothing : PyBytes_AS_STRING(self->bytes);

    if (PyBuffer_FillInfo(view, (PyObject *)self, data,
                          payload_buffer_length(self), 0, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
payload_buffer_releasebuffer(PayloadBufferObject *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

PyDoc_STRVAR(payload_buffer_take_doc,
"take($self, /)\n"
"--\n"
"\n"
"Return the buffer's bytes, as a bytes object; the buffer is then empty.\n"
"\n"
"Raises:\n"
"    BufferError: If a memoryview of the buffer is alive, or the bytes\n"
"        were taken already.\n");

static PyObject *
payload_buffer_take(PayloadBufferObject *self, PyObject *unused)
{
    PyObject *result;

    (void)unused;
    if (self->exports > 0) {
        PyErr_SetString(PyExc_BufferError,
                        "Existing exports of data: object cannot be re-sized");
        return NULL;
    }
    if (self->bytes == NULL) {
        PyErr_SetString(PyExc_BufferError,
                        "the payload buffer was taken already");
        return NULL;
    }
    result = self->bytes;
    self->bytes = NULL;
    return result;
}

static PyMethodDef payload_buffer_methods[] = {
    {"take", (PyCFunction)payload_buffer_take, METH_NOARGS,
     payload_buffer_take_doc},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot payload_buffer_slots[] = {
    {Py_tp_doc, (void *)payload_buffer_doc},
    {Py_tp_new, (void *)payload_buffer_new},
    {Py_tp_dealloc, (void *)payload_buffer_dealloc},
    {Py_tp_methods, payload_buffer_methods},
    {Py_sq_length, (void *)payload_buffer_length},
    {Py_bf_getbuffer, (void *)payload_buffer_getbuffer},
    {Py_bf_releasebuffer, (void *)payload_buffer_releasebuffer},
    {0, NULL},
};

/* Immutable (3.10+), like built-in types: no attribute may be set on it. */
#ifndef Py_TPFLAGS_IMMUTABLETYPE
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif

static PyType_Spec payload_buffer_spec = {
    "syncws._speedups.PayloadBuffer",
    sizeof(PayloadBufferObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    payload_buffer_slots,
};

#ifndef _WIN32
static PyType_Spec simple_queue_spec = {
    "syncws._speedups.SimpleQueue",
    sizeof(SimpleQueueObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC,
    simple_queue_slots,
};
#endif

/* A heap type per module object, as multi-phase initialization wants. */
static int
speedups_exec(PyObject *module)
{
    speedups_state *state = PyModule_GetState(module);
    PyObject *type;
#ifndef _WIN32
    PyObject *queue;
#endif

    state->fileno = PyUnicode_InternFromString("fileno");
    if (state->fileno == NULL) {
        return -1;
    }
#if !defined(Py_GIL_DISABLED) && !defined(__linux__)
    /* Never freed: a thread may sleep on it until the process ends. */
    state->gate = PyThread_allocate_lock();
    if (state->gate == NULL) {
        PyErr_NoMemory();
        return -1;
    }
#endif
#ifndef _WIN32
    queue = PyImport_ImportModule("_queue");
    if (queue == NULL) {
        return -1;
    }
    state->empty = PyObject_GetAttrString(queue, "Empty");
    Py_DECREF(queue);
    if (state->empty == NULL) {
        return -1;
    }
    type = PyType_FromModuleAndSpec(module, &simple_queue_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddObject(module, "SimpleQueue", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
#endif
    type = PyType_FromModuleAndSpec(module, &payload_buffer_spec, NULL);

    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddObject(module, "PayloadBuffer", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     apply_mask_doc},
    {"apply_mask_inplace", (PyCFunction)(void (*)(void))apply_mask_inplace,
     METH_FASTCALL, apply_mask_inplace_doc},
    {"parse_simple_frames", (PyCFunction)(void (*)(void))parse_simple_frames,
     METH_FASTCALL, parse_simple_frames_doc},
    {"pack_frame", (PyCFunction)(void (*)(void))pack_frame, METH_FASTCALL,
     pack_frame_doc},
#ifdef MSG_DONTWAIT
    {"send_nowait", (PyCFunction)(void (*)(void))send_nowait, METH_FASTCALL,
     send_nowait_doc},
#endif
#ifndef _WIN32
    {"recv", (PyCFunction)(void (*)(void))recv_gated, METH_FASTCALL,
     recv_doc},
    {"recv_into", (PyCFunction)(void (*)(void))recv_into_gated, METH_FASTCALL,
     recv_into_doc},
#endif
    {"reset_gate", (PyCFunction)reset_gate, METH_NOARGS, reset_gate_doc},
    {NULL, NULL, 0, NULL},
};

static int
speedups_traverse(PyObject *module, visitproc visit, void *arg)
{
    speedups_state *state = PyModule_GetState(module);

    Py_VISIT(state->fileno);
    Py_VISIT(state->empty);
    return 0;
}

static int
speedups_clear(PyObject *module)
{
    speedups_state *state = PyModule_GetState(module);

    Py_CLEAR(state->fileno);
    Py_CLEAR(state->empty);
    return 0;
}

static void
speedups_free(void *module)
{
    speedups_clear((PyObject *)module);
}

/* Multi-phase initialization: the module keeps its type and one interned
 * name (one of each per module object), so it is safe in subinterpreters,
 * and it doesn't need the GIL (Py_mod_gil, CPython 3.13+): the functions
 * only touch memory the caller handed over, SimpleQueue keeps its list
 * under its critical section, and the gate exists only with a GIL.  A
 * PayloadBuffer's export count is not atomic: a buffer belongs to one
 * thread at a time (the reader thread, under the core's lock). */
static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, (void *)speedups_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(speedups_doc,
"C accelerator for syncws.masking, syncws.framing, syncws.payload and\n"
"syncws.transport; use those modules, not this one.");

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "syncws._speedups",
    speedups_doc,
    sizeof(speedups_state),
    speedups_methods,
    speedups_slots,
    speedups_traverse,
    speedups_clear,
    speedups_free,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
