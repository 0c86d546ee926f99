#include "encoder.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

struct c_usher_encoder {
    int kind;
    z_stream z;
    ZSTD_CStream *zs;
};

c_usher_encoder *c_usher_encoder_new(int kind, int level) {
    c_usher_encoder *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->kind = kind;
    if (kind == 1) {
        // windowBits 15 + 16: a gzip wrapper, as Go's compress/gzip writes.
        if (deflateInit2(&e->z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) { free(e); return NULL; }
    } else if (kind == 2) {
        e->zs = ZSTD_createCStream();
        if (!e->zs) { free(e); return NULL; }
        ZSTD_CCtx_setParameter(e->zs, ZSTD_c_compressionLevel, level);
        ZSTD_CCtx_setParameter(e->zs, ZSTD_c_checksumFlag, 1);
    } else {
        free(e);
        return NULL;
    }
    return e;
}

void c_usher_encoder_set_checksum(c_usher_encoder *e, int on) {
    if (e->kind == 2) ZSTD_CCtx_setParameter(e->zs, ZSTD_c_checksumFlag, on ? 1 : 0);
}

int c_usher_encoder_reset(c_usher_encoder *e) {
    if (e->kind == 1) return deflateReset(&e->z) == Z_OK ? 0 : -1;
    return ZSTD_isError(ZSTD_CCtx_reset(e->zs, ZSTD_reset_session_only)) ? -1 : 0;
}

int c_usher_encoder_step(c_usher_encoder *e, const uint8_t *in, size_t in_len, size_t *consumed,
                         uint8_t *out, size_t out_cap, size_t *produced, int mode) {
    if (e->kind == 1) {
        e->z.next_in = (Bytef *)in;
        e->z.avail_in = (uInt)in_len;
        e->z.next_out = out;
        e->z.avail_out = (uInt)out_cap;
        int flush = mode == 2 ? Z_FINISH : (mode == 1 ? Z_SYNC_FLUSH : Z_NO_FLUSH);
        int rc = deflate(&e->z, flush);
        *consumed = in_len - e->z.avail_in;
        *produced = out_cap - e->z.avail_out;
        if (rc == Z_STREAM_ERROR) return -1;
        if (mode == 2) return rc == Z_STREAM_END ? 0 : 1;
        // More to do while input is left, or while deflate filled all the output space (it may hold more).
        return (e->z.avail_in > 0 || e->z.avail_out == 0) ? 1 : 0;
    }
    ZSTD_inBuffer ib = { in, in_len, 0 };
    ZSTD_outBuffer ob = { out, out_cap, 0 };
    ZSTD_EndDirective d = mode == 2 ? ZSTD_e_end : (mode == 1 ? ZSTD_e_flush : ZSTD_e_continue);
    size_t rc = ZSTD_compressStream2(e->zs, &ob, &ib, d);
    *consumed = ib.pos;
    *produced = ob.pos;
    if (ZSTD_isError(rc)) return -1;
    if (mode == 0) return ib.pos < ib.size ? 1 : 0;
    return rc == 0 ? 0 : 1;
}

void c_usher_encoder_free(c_usher_encoder *e) {
    if (!e) return;
    if (e->kind == 1) deflateEnd(&e->z);
    else ZSTD_freeCStream(e->zs);
    free(e);
}
