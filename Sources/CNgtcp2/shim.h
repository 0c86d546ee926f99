#ifndef USHER_CNGTCP2_SHIM_H
#define USHER_CNGTCP2_SHIM_H

// ngtcp2 0.12.1 with its GnuTLS crypto backend (Debian 12). The versioned entry points hide behind function-like
// macros; these inline wrappers expand them so Swift can call them.
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <gnutls/gnutls.h>

static inline void usher_ngtcp2_settings_default(ngtcp2_settings *settings) {
    ngtcp2_settings_default(settings);
}

static inline void usher_ngtcp2_transport_params_default(ngtcp2_transport_params *params) {
    ngtcp2_transport_params_default(params);
}

static inline int usher_ngtcp2_conn_server_new(ngtcp2_conn **pconn, const ngtcp2_cid *dcid, const ngtcp2_cid *scid,
                                               const ngtcp2_path *path, uint32_t client_chosen_version,
                                               const ngtcp2_callbacks *callbacks, const ngtcp2_settings *settings,
                                               const ngtcp2_transport_params *params, const ngtcp2_mem *mem,
                                               void *user_data) {
    return ngtcp2_conn_server_new(pconn, dcid, scid, path, client_chosen_version, callbacks, settings, params, mem,
                                  user_data);
}

static inline int usher_ngtcp2_conn_client_new(ngtcp2_conn **pconn, const ngtcp2_cid *dcid, const ngtcp2_cid *scid,
                                               const ngtcp2_path *path, uint32_t version,
                                               const ngtcp2_callbacks *callbacks, const ngtcp2_settings *settings,
                                               const ngtcp2_transport_params *params, const ngtcp2_mem *mem,
                                               void *user_data) {
    return ngtcp2_conn_client_new(pconn, dcid, scid, path, version, callbacks, settings, params, mem, user_data);
}

static inline int usher_ngtcp2_conn_read_pkt(ngtcp2_conn *conn, const ngtcp2_path *path, const ngtcp2_pkt_info *pi,
                                             const uint8_t *pkt, size_t pktlen, ngtcp2_tstamp ts) {
    return ngtcp2_conn_read_pkt(conn, path, pi, pkt, pktlen, ts);
}

static inline ngtcp2_ssize usher_ngtcp2_conn_writev_stream(ngtcp2_conn *conn, ngtcp2_path *path, ngtcp2_pkt_info *pi,
                                                           uint8_t *dest, size_t destlen, ngtcp2_ssize *pdatalen,
                                                           uint32_t flags, int64_t stream_id,
                                                           const ngtcp2_vec *datav, size_t datavcnt,
                                                           ngtcp2_tstamp ts) {
    return ngtcp2_conn_writev_stream(conn, path, pi, dest, destlen, pdatalen, flags, stream_id, datav, datavcnt, ts);
}

static inline ngtcp2_ssize usher_ngtcp2_conn_writev_datagram(ngtcp2_conn *conn, ngtcp2_path *path,
                                                             ngtcp2_pkt_info *pi, uint8_t *dest, size_t destlen,
                                                             int *paccepted, uint32_t flags, uint64_t dgram_id,
                                                             const ngtcp2_vec *datav, size_t datavcnt,
                                                             ngtcp2_tstamp ts) {
    return ngtcp2_conn_writev_datagram(conn, path, pi, dest, destlen, paccepted, flags, dgram_id, datav, datavcnt, ts);
}

static inline ngtcp2_ssize usher_ngtcp2_conn_write_connection_close(ngtcp2_conn *conn, ngtcp2_path *path,
                                                                    ngtcp2_pkt_info *pi, uint8_t *dest,
                                                                    size_t destlen,
                                                                    const ngtcp2_connection_close_error *ccerr,
                                                                    ngtcp2_tstamp ts) {
    return ngtcp2_conn_write_connection_close(conn, path, pi, dest, destlen, ccerr, ts);
}

#include <stdarg.h>
#include <stdio.h>

// ngtcp2's debug log (a variadic callback, which Swift cannot define) to standard error.
static void usher_ngtcp2_log_stderr(void *user_data, const char *format, ...) {
    (void)user_data;
    va_list ap;
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static inline void usher_ngtcp2_settings_log_to_stderr(ngtcp2_settings *settings) {
    settings->log_printf = usher_ngtcp2_log_stderr;
}

#endif
