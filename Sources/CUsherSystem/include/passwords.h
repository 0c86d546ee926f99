#ifndef C_USHER_PASSWORDS_H
#define C_USHER_PASSWORDS_H

#include <stddef.h>
#include <stdint.h>

/// Hashes `password` (NUL-terminated) with the crypt(3) method and parameters of `setting` (a full hash or a salt
/// string such as `$2a$14$...`), through libxcrypt's crypt_rn. Writes the NUL-terminated result into `out`
/// (`size` bytes) and returns 0, or -1 if the setting is invalid or the method unknown.
int c_usher_crypt(const char *password, const char *setting, char *out, size_t size);

/// Makes a bcrypt salt string (`prefix` such as `$2a$`, `cost` 4–31) with random bytes from the kernel into `out`.
/// Returns 0, or -1 on error.
int c_usher_bcrypt_salt(const char *prefix, unsigned long cost, char *out, size_t size);

/// Argon2id (RFC 9106, version 0x13) of `password` with `salt`: `time` passes over `memory` KiB in `threads` lanes,
/// `keylen` bytes into `out`. Returns 0, else libargon2's negative error code.
int c_usher_argon2id(const uint8_t *password, size_t password_len, const uint8_t *salt, size_t salt_len,
                     uint32_t time, uint32_t memory, uint32_t threads, uint8_t *out, size_t keylen);

/// libargon2's message for an error code.
const char *c_usher_argon2_error(int code);

#endif
