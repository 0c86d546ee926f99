#include "compress.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

enum { chunk = 64 * 1024 };

static int gzip_file(int in, const char *dst) {
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) return -1;
    gzFile gz = gzdopen(out, "wb6");
    if (!gz) { close(out); return -1; }
    char buf[chunk];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0) { if (errno == EINTR) continue; gzclose(gz); return -1; }
        if (n == 0) break;
        if (gzwrite(gz, buf, (unsigned)n) != (int)n) { gzclose(gz); return -1; }
    }
    return gzclose(gz) == Z_OK ? 0 : -1;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int zstd_file(int in, const char *dst) {
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) return -1;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    size_t outCap = ZSTD_CStreamOutSize();
    char *inBuf = malloc(chunk), *outBuf = malloc(outCap);
    int rc = -1;
    if (!cctx || !inBuf || !outBuf) goto done;
    for (;;) {
        ssize_t n = read(in, inBuf, chunk);
        if (n < 0) { if (errno == EINTR) continue; goto done; }
        ZSTD_EndDirective mode = n == 0 ? ZSTD_e_end : ZSTD_e_continue;
        ZSTD_inBuffer input = { inBuf, (size_t)n, 0 };
        int finished = 0;
        while (!finished) {
            ZSTD_outBuffer output = { outBuf, outCap, 0 };
            size_t remaining = ZSTD_compressStream2(cctx, &output, &input, mode);
            if (ZSTD_isError(remaining)) goto done;
            if (write_all(out, outBuf, output.pos) < 0) goto done;
            finished = mode == ZSTD_e_end ? remaining == 0 : input.pos == input.size;
        }
        if (n == 0) break;
    }
    rc = 0;
done:
    ZSTD_freeCCtx(cctx);
    free(inBuf);
    free(outBuf);
    if (close(out) < 0) rc = -1;
    return rc;
}

int c_usher_compress_file(const char *src, const char *dst, int kind) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -1;
    int rc = kind == 2 ? zstd_file(in, dst) : gzip_file(in, dst);
    int saved = errno;
    close(in);
    if (rc != 0) unlink(dst);
    errno = saved;
    return rc;
}
