#ifndef USHER_CNGHTTP3_SHIM_H
#define USHER_CNGHTTP3_SHIM_H

// nghttp3 0.8.0 (Debian 12). Its entry points are function-like macros over *_versioned functions, which Swift
// cannot call; these inline wrappers expand them here.
#include <nghttp3/nghttp3.h>

static inline void usher_nghttp3_settings_default(nghttp3_settings *settings) {
    nghttp3_settings_default(settings);
}

static inline int usher_nghttp3_conn_server_new(nghttp3_conn **pconn, const nghttp3_callbacks *callbacks,
                                                const nghttp3_settings *settings, const nghttp3_mem *mem,
                                                void *user_data) {
    return nghttp3_conn_server_new(pconn, callbacks, settings, mem, user_data);
}

static inline int usher_nghttp3_conn_client_new(nghttp3_conn **pconn, const nghttp3_callbacks *callbacks,
                                                const nghttp3_settings *settings, const nghttp3_mem *mem,
                                                void *user_data) {
    return nghttp3_conn_client_new(pconn, callbacks, settings, mem, user_data);
}

#endif
