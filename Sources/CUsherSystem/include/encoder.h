#ifndef C_USHER_ENCODER_H
#define C_USHER_ENCODER_H

#include <stddef.h>
#include <stdint.h>

/// A streaming compressor for response bodies: `kind` 1 = gzip (zlib), 2 = zstd.
typedef struct c_usher_encoder c_usher_encoder;

/// A new compressor at `level` (gzip 1-9, zstd 1-22), or NULL when out of memory or the kind is unknown.
c_usher_encoder *c_usher_encoder_new(int kind, int level);

/// zstd only: whether frames end with a checksum (on by default).
void c_usher_encoder_set_checksum(c_usher_encoder *e, int on);

/// Resets a compressor for a new stream, keeping its allocations.
int c_usher_encoder_reset(c_usher_encoder *e);

/// Feeds `in` (may be empty) and writes compressed bytes to `out`. `mode` 0 = more input follows, 1 = flush so
/// the peer can decode everything so far, 2 = end of stream. Sets how much was consumed and produced. Returns
/// 1 when the same call must be repeated with more output space (input left or output pending), 0 when done,
/// -1 on error.
int c_usher_encoder_step(c_usher_encoder *e, const uint8_t *in, size_t in_len, size_t *consumed,
                         uint8_t *out, size_t out_cap, size_t *produced, int mode);

void c_usher_encoder_free(c_usher_encoder *e);

#endif
