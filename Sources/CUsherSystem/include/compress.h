#ifndef C_USHER_COMPRESS_H
#define C_USHER_COMPRESS_H

/// Compresses file `src` into new file `dst` (mode 0600), streaming in chunks: `kind` 1 = gzip, 2 = zstd.
/// Returns 0 on success, -1 on failure (errno set where the system set it); `dst` is removed on failure.
int c_usher_compress_file(const char *src, const char *dst, int kind);

#endif
