#ifndef C_USHER_TLS_H
#define C_USHER_TLS_H

#include <stddef.h>
#include <stdint.h>

/// BoringSSL's SSL_CTX_set_ocsp_response, as swift-nio-ssl links it (every BoringSSL symbol there carries the
/// CNIOBoringSSL_ prefix). swift-nio-ssl offers no API for OCSP stapling, so UsherTLS calls this on a context it
/// has just made, before any connection uses it. Returns 1 on success.
int CNIOBoringSSL_SSL_CTX_set_ocsp_response(void *ctx, const uint8_t *response, size_t response_len);

#endif
