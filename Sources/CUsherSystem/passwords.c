#include "passwords.h"

#include <argon2.h>
#include <crypt.h>
#include <string.h>

int c_usher_crypt(const char *password, const char *setting, char *out, size_t size) {
    struct crypt_data data;
    memset(&data, 0, sizeof data);
    if (crypt_rn(password, setting, &data, sizeof data) == NULL) return -1;
    // libxcrypt marks failure with a result starting with '*'.
    if (data.output[0] == '*') return -1;
    size_t n = strlen(data.output);
    if (n + 1 > size) return -1;
    memcpy(out, data.output, n + 1);
    return 0;
}

int c_usher_bcrypt_salt(const char *prefix, unsigned long cost, char *out, size_t size) {
    return crypt_gensalt_rn(prefix, cost, NULL, 0, out, (int)size) == NULL ? -1 : 0;
}

int c_usher_argon2id(const uint8_t *password, size_t password_len, const uint8_t *salt, size_t salt_len,
                     uint32_t time, uint32_t memory, uint32_t threads, uint8_t *out, size_t keylen) {
    return argon2id_hash_raw(time, memory, threads, password, password_len, salt, salt_len, out, keylen);
}

const char *c_usher_argon2_error(int code) { return argon2_error_message(code); }
