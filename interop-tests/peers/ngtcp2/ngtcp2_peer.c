/*
 * ngtcp2 (Debian bookworm's libngtcp2 0.12.1 with libngtcp2_crypto_gnutls and GnuTLS)
 * as a reference peer of quill's interop suite: hq-interop (the QUIC interop runner's
 * HTTP/0.9) in both roles, with the command line and JSON reports of quinn-peer,
 * quiche-peer and aioquic_peer.py (interop-tests/src/refpeers/hq.rs):
 *
 *   ngtcp2-peer hq server --testcase NAME --listen ADDR --root DIR [--state-dir DIR]
 *   ngtcp2-peer hq client --testcase NAME --connect ADDR --download DIR --files a,b
 *       [--files-from LIST] [--timeout-secs S]
 *
 * The server prints `listening ADDR`, serves until its standard input closes, then
 * prints its JSON line. The client prints its JSON line and exits 0 (every file) or 3.
 * A test case it cannot play: `unsupported REASON`, exit 127.
 *
 * Only the public API of libngtcp2 and libngtcp2_crypto_gnutls is used; the
 * ngtcp2_crypto_* helpers do the TLS and packet protection. The server's certificate is
 * made at start (a self-signed ECDSA P-256 certificate for localhost, GnuTLS; in
 * amplificationlimit a padded chain of 9); the
 * client does not verify it, as the interop runner's endpoints do not. Every wait is
 * bounded: poll() with the connections' expiry timers, the client's --timeout-secs.
 * In ecn the datagrams carry the ECN codepoints ngtcp2 asks for; in resumption and
 * zerortt the server issues session tickets (and accepts 0-RTT), the client resumes.
 *
 * Built by interop-tests/peers/setup.sh with
 *   cc -O2 ngtcp2_peer.c $(pkg-config --cflags --libs libngtcp2 libngtcp2_crypto_gnutls gnutls)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#define STACK "ngtcp2"
#define ALPN "hq-interop"
#define EXIT_FAILURE_RUN 3
#define EXIT_UNSUPPORTED 127
#define MAX_REQUEST 4096
#define MAX_FILE (64ull << 20)
#define SMALL_STREAM_WINDOW (64ull << 10)
#define SMALL_CONN_WINDOW (128ull << 10)
#define DEFAULT_WINDOW (16ull << 20)
#define SCID_LEN 18
#define MAX_PKT 1500
#define BURST 64
#define IDLE_TIMEOUT (30 * NGTCP2_SECONDS)
#define HANDSHAKE_TIMEOUT (60 * NGTCP2_SECONDS)
/* As long as a handshake may take: a client backing off under loss keeps its token. */
#define RETRY_TOKEN_LIFETIME HANDSHAKE_TIMEOUT

/* ------------------------------------------------------------------ profiles */

/* What a test case asks of an endpoint (refpeers/hq.rs, Profile). */
struct profile {
  int retry, chacha20, small_windows, connection_per_file, key_update;
  uint64_t max_streams_bidi;
  int cert_chain_len; /* certificates the server serves: 9 in amplificationlimit */
  int ecn;            /* ecn: datagrams carry the ECN codepoint ngtcp2 asks for; marks read */
  /* resumption, zerortt: the client fetches the first file over one connection and the
   * others over a second one that resumes the first's TLS session (a session ticket);
   * zerortt: the second sends its requests in 0-RTT, and the server accepts early data. */
  int resume, zero_rtt;
  /* connectionmigration: the client moves to a new local port mid-transfer (this peer's
   * client does not yet: it says unsupported); the server plays transfer. */
  int active_migration;
};

static int profile_for(const char *name, struct profile *p) {
  if (strcmp(name, "ecn") == 0) {
    memset(p, 0, sizeof(*p));
    p->max_streams_bidi = 1000;
    p->cert_chain_len = 1;
    p->ecn = 1;
    return 0;
  }
  static const char *plain[] = {"handshake", "transferloss", "transfercorruption",
                                "blackhole", "longrtt",      "goodput",
                                "ipv6",      "rebind-port",  "multiplexing",
                                "rebind-addr"};
  memset(p, 0, sizeof(*p));
  p->max_streams_bidi = 1000;
  p->cert_chain_len = 1;
  for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
    if (strcmp(name, plain[i]) == 0) return 0;
  if (strcmp(name, "transfer") == 0) p->small_windows = 1;
  /* The interop runner's rule: the client migrates, the server plays transfer. */
  else if (strcmp(name, "connectionmigration") == 0) p->small_windows = p->active_migration = 1;
  else if (strcmp(name, "amplificationlimit") == 0) {
    /* The interop runner's endpoints play "transfer" here, with its chain of 9. */
    p->small_windows = 1;
    p->cert_chain_len = 9;
  }  else if (strcmp(name, "retry") == 0) p->retry = 1;
  else if (strcmp(name, "resumption") == 0) p->resume = 1;
  else if (strcmp(name, "zerortt") == 0) p->resume = p->zero_rtt = 1;
  else if (strcmp(name, "chacha20") == 0) p->chacha20 = 1;
  else if (strcmp(name, "keyupdate") == 0) p->key_update = 1;
  else if (strcmp(name, "handshakeloss") == 0 || strcmp(name, "handshakecorruption") == 0)
    p->connection_per_file = 1;
  else return -1;
  return 0;
}

static struct profile prof;
static FILE *debug_log; /* QUILL_NGTCP2_LOG=FILE: ngtcp2's own log, appended */

/* ------------------------------------------------------------------ helpers */

static ngtcp2_tstamp now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "ngtcp2-peer: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static void *xcalloc(size_t n, size_t sz) {
  void *p = calloc(n, sz);
  if (!p) die("out of memory");
  return p;
}

static void log_printf(void *user_data, const char *fmt, ...) {
  va_list ap;
  (void)user_data;
  va_start(ap, fmt);
  vfprintf(debug_log, fmt, ap);
  va_end(ap);
  fputc('\n', debug_log);
}

static void rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  gnutls_rnd(GNUTLS_RND_RANDOM, dest, destlen);
}

static uint8_t static_secret[32];

static int get_new_connection_id_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token,
                                    size_t cidlen, void *user_data) {
  (void)conn;
  (void)user_data;
  if (gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  cid->datalen = cidlen;
  if (ngtcp2_crypto_generate_stateless_reset_token(token, static_secret, sizeof(static_secret),
                                                   cid) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

/* Parses `HOST:PORT` or `[V6]:PORT` (numeric). */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len) {
  char host[256];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof(host)) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  char *h = host;
  size_t hl = strlen(h);
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
    h[hl - 1] = 0;
    h++;
  }
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  if (getaddrinfo(h, colon + 1, &hints, &res) != 0 || !res) return -1;
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t n) {
  char host[INET6_ADDRSTRLEN];
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)ss;
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    snprintf(out, n, "[%s]:%u", host, ntohs(a->sin6_port));
  } else {
    const struct sockaddr_in *a = (const void *)ss;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    snprintf(out, n, "%s:%u", host, ntohs(a->sin_port));
  }
}

/* ------------------------------------------------------------------ ECN */

/* ECN (prof.ecn): the receiving socket reports each datagram's TOS / Traffic Class byte
 * (IP_RECVTOS, IPV6_RECVTCLASS), whose low two bits go to ngtcp2 in
 * ngtcp2_pkt_info.ecn; each datagram is sent with the codepoint ngtcp2 put in its
 * ngtcp2_pkt_info.ecn (IP_TOS / IPV6_TCLASS, set on the socket when it changes). ngtcp2
 * counts the marks, sends ACK frames with ECN counts, and validates the path itself. */
static void ecn_enable(int fd, int family) {
  int on = 1;
  if (!prof.ecn) return;
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof(on));
  else setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof(on));
}

/* Marks what `fd` sends next with `ecn` (a socket option, set only when it changes). */
static void ecn_set(int fd, int family, uint32_t ecn) {
  static int last_fd = -1;
  static uint32_t last_ecn;
  int tos = (int)(ecn & 0x03);
  if (!prof.ecn || (fd == last_fd && ecn == last_ecn)) return;
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof(tos));
  else setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
  last_fd = fd;
  last_ecn = ecn;
}

/* recvfrom() that also returns the datagram's ECN codepoint (0 when not reported). */
static ssize_t recv_ecn(int fd, uint8_t *buf, size_t n, struct sockaddr_storage *from,
                        socklen_t *fromlen, uint32_t *ecn) {
  struct iovec iov = {buf, n};
  union {
    struct cmsghdr align;
    uint8_t b[CMSG_SPACE(sizeof(int)) * 2];
  } ctl;
  struct msghdr m;
  memset(&m, 0, sizeof(m));
  m.msg_name = from;
  m.msg_namelen = from ? *fromlen : 0;
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl.b;
  m.msg_controllen = sizeof(ctl.b);
  ssize_t r = recvmsg(fd, &m, 0);
  *ecn = 0;
  if (r < 0) return r;
  if (from) *fromlen = m.msg_namelen;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
    if (cm->cmsg_len < CMSG_LEN(1)) continue;
    const uint8_t *d = CMSG_DATA(cm);
    if (cm->cmsg_level == IPPROTO_IP && (cm->cmsg_type == IP_TOS || cm->cmsg_type == IP_RECVTOS))
      *ecn = d[0] & 0x03; /* one byte */
    else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_TCLASS &&
             cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int tc;
      memcpy(&tc, d, sizeof(tc));
      *ecn = (uint32_t)tc & 0x03;
    }
  }
  return r;
}

/* JSON string (or null) into out. */
static void json_str(FILE *f, const char *s) {
  if (!s) {
    fputs("null", f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

/* ------------------------------------------------------------------ TLS */

/* What a connection negotiated (the JSON's version/alpn/group/cipher). */
struct negotiated {
  uint32_t version;
  char alpn[64];
  const char *group;
  const char *cipher;
};

static const char *priority(void) {
  /* TLS 1.3 only, no middlebox compatibility mode (RFC 9001 §8.4). */
  return prof.chacha20
             ? "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:"
               "+CHACHA20-POLY1305:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"
               "+GROUP-SECP384R1"
             : "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:"
               "+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:-GROUP-ALL:+GROUP-X25519:"
               "+GROUP-SECP256R1:+GROUP-SECP384R1";
}

static const char *group_name(gnutls_group_t g) {
  switch (g) {
  case GNUTLS_GROUP_X25519: return "X25519";
  case GNUTLS_GROUP_SECP256R1: return "secp256r1";
  case GNUTLS_GROUP_SECP384R1: return "secp384r1";
  case GNUTLS_GROUP_SECP521R1: return "secp521r1";
  case GNUTLS_GROUP_X448: return "X448";
  default: return NULL;
  }
}

static const char *cipher_name(gnutls_cipher_algorithm_t c) {
  switch (c) {
  case GNUTLS_CIPHER_AES_128_GCM: return "TLS_AES_128_GCM_SHA256";
  case GNUTLS_CIPHER_AES_256_GCM: return "TLS_AES_256_GCM_SHA384";
  case GNUTLS_CIPHER_CHACHA20_POLY1305: return "TLS_CHACHA20_POLY1305_SHA256";
  case GNUTLS_CIPHER_AES_128_CCM: return "TLS_AES_128_CCM_SHA256";
  default: return NULL;
  }
}

static void read_negotiated(ngtcp2_conn *conn, gnutls_session_t s, struct negotiated *n) {
  gnutls_datum_t alpn;
  n->version = ngtcp2_conn_get_negotiated_version(conn);
  n->alpn[0] = 0;
  if (gnutls_alpn_get_selected_protocol(s, &alpn) == 0 && alpn.size < sizeof(n->alpn)) {
    memcpy(n->alpn, alpn.data, alpn.size);
    n->alpn[alpn.size] = 0;
  }
  n->group = group_name(gnutls_group_get(s));
  n->cipher = cipher_name(gnutls_cipher_get(s));
}

static void print_negotiated(FILE *f, const struct negotiated *n) {
  if (n->version) fprintf(f, "\"version\":\"0x%08x\"", n->version);
  else fputs("\"version\":null", f);
  fputs(",\"alpn\":", f);
  json_str(f, n->alpn[0] ? n->alpn : NULL);
  fputs(",\"group\":", f);
  json_str(f, n->group);
  fputs(",\"cipher\":", f);
  json_str(f, n->cipher);
}

static gnutls_certificate_credentials_t server_cred, client_cred;

/* Bytes of the private padding extension of each certificate in a chain, as
 * refpeers::ensure_certificate_chain (CHAIN_PADDING): 9 certificates of about 870 B. */
#define CHAIN_PADDING 500
#define MAX_CHAIN 9

/* One ECDSA P-256 certificate for `cn`: self-signed when `issuer` is NULL, a CA when
 * `ca`, padded (OID 1.3.6.1.4.1.55555.1, an OCTET STRING of zeros) when `pad`. */
static gnutls_x509_crt_t make_cert(gnutls_x509_privkey_t key, const char *cn, int ca, int pad,
                                   gnutls_x509_crt_t issuer, gnutls_x509_privkey_t issuer_key) {
  gnutls_x509_crt_t crt;
  unsigned char serial[16];
  char dn[128];
  static unsigned char padding[4 + CHAIN_PADDING];
  time_t now = time(NULL);
  if (gnutls_x509_crt_init(&crt) < 0) die("gnutls_x509_crt_init failed");
  gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
  serial[0] &= 0x7f;
  snprintf(dn, sizeof(dn), "CN=%s", cn);
  padding[0] = 0x04;
  padding[1] = 0x82;
  padding[2] = (unsigned char)(CHAIN_PADDING >> 8);
  padding[3] = (unsigned char)(CHAIN_PADDING & 0xff);
  if (gnutls_x509_crt_set_version(crt, 3) < 0 ||
      gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) < 0 ||
      gnutls_x509_crt_set_activation_time(crt, now - 86400) < 0 ||
      gnutls_x509_crt_set_expiration_time(crt, now + 10 * 86400) < 0 ||
      gnutls_x509_crt_set_dn(crt, dn, NULL) < 0 || gnutls_x509_crt_set_key(crt, key) < 0 ||
      (!ca && gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
                                                   GNUTLS_FSAN_SET) < 0) ||
      gnutls_x509_crt_set_basic_constraints(crt, ca, -1) < 0 ||
      (pad && gnutls_x509_crt_set_extension_by_oid(crt, "1.3.6.1.4.1.55555.1", padding,
                                                   sizeof(padding), 0) < 0) ||
      gnutls_x509_crt_sign2(crt, issuer ? issuer : crt, issuer ? issuer_key : key,
                            GNUTLS_DIG_SHA256, 0) < 0)
    die("cannot make the certificate %s", cn);
  /* Parsed again from its DER: GnuTLS orders a chain by the subject and issuer names it
   * keeps from parsing, which a certificate made in memory lacks (without this it keeps
   * the leaf alone). */
  gnutls_datum_t der;
  if (gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der) < 0) die("cannot export %s", cn);
  gnutls_x509_crt_deinit(crt);
  if (gnutls_x509_crt_init(&crt) < 0 || gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER) < 0)
    die("cannot import %s", cn);
  gnutls_free(der.data);
  return crt;
}

static gnutls_x509_privkey_t make_key(void) {
  gnutls_x509_privkey_t key;
  if (gnutls_x509_privkey_init(&key) < 0 ||
      gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                   GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) < 0)
    die("cannot generate a certificate key");
  return key;
}

/* The server's certificate, made at start: one self-signed ECDSA P-256 certificate for
 * localhost, or (cert_chain_len > 1, amplificationlimit) a padded chain as
 * refpeers::ensure_certificate_chain makes: a root CA, CAs each signed by the one
 * before, and the leaf, served leaf first. */
static void make_server_credentials(void) {
  gnutls_x509_crt_t chain[MAX_CHAIN];
  gnutls_x509_privkey_t keys[MAX_CHAIN];
  int len = prof.cert_chain_len < 1 ? 1 : prof.cert_chain_len > MAX_CHAIN ? MAX_CHAIN
                                                                         : prof.cert_chain_len;
  int pad = len > 1;
  char cn[64];
  /* chain[len-1] is the root; chain[0] the leaf. */
  for (int i = len - 1; i >= 0; i--) {
    keys[i] = make_key();
    if (i > 0) snprintf(cn, sizeof(cn), "quill interop CA %d", len - 1 - i);
    else snprintf(cn, sizeof(cn), "localhost");
    chain[i] = make_cert(keys[i], cn, i > 0, pad, i == len - 1 ? NULL : chain[i + 1],
                         i == len - 1 ? NULL : keys[i + 1]);
  }
  if (gnutls_certificate_allocate_credentials(&server_cred) < 0 ||
      gnutls_certificate_set_x509_key(server_cred, chain, (unsigned)len, keys[0]) < 0)
    die("cannot load the certificate");
  for (int i = 0; i < len; i++) {
    gnutls_x509_crt_deinit(chain[i]);
    gnutls_x509_privkey_deinit(keys[i]);
  }
}

/* ------------------------------------------------------------------ streams */

/* One bidirectional stream: a request (client) or a response (server). */
struct stream {
  int64_t id;
  struct stream *next, *prev; /* every stream of the connection */
  /* Bytes to send (request or file), how far they went, and whether the FIN did. */
  uint8_t *out;
  size_t outlen, outoff;
  int fin_sent;
  unsigned blocked_round;
  /* Bytes received (request or response). */
  uint8_t *in;
  size_t inlen, incap;
  int done;
  const char *name; /* client: the file */
};

static void stream_free(struct stream *s) {
  free(s->out);
  free(s->in);
  free(s);
}

static int append(struct stream *s, const uint8_t *data, size_t len, size_t limit) {
  if (s->inlen + len > limit) return -1;
  if (s->inlen + len > s->incap) {
    size_t cap = s->incap ? s->incap : 4096;
    while (cap < s->inlen + len) cap *= 2;
    uint8_t *p = realloc(s->in, cap);
    if (!p) return -1;
    s->in = p;
    s->incap = cap;
  }
  memcpy(s->in + s->inlen, data, len);
  s->inlen += len;
  return 0;
}

/* ------------------------------------------------------------------ connections */

/* One QUIC connection, either role. */
struct conn {
  ngtcp2_conn *conn;
  gnutls_session_t tls;
  ngtcp2_crypto_conn_ref ref;
  int fd, connected; /* the socket; connected: send() instead of sendto() */
  ngtcp2_cid first_dcid; /* server: the DCID of the client's accepted Initial */
  struct sockaddr_storage local;
  socklen_t locallen;
  struct stream *head, *tail; /* every stream, oldest first */
  unsigned round;
  int dead;                 /* closed; dropped at dead_until */
  ngtcp2_tstamp dead_until; /* server: packets to a closed connection are absorbed until */
  int handshake_done, confirmed, key_update_done, retried;
  int early;         /* client: the connection sends its requests in 0-RTT */
  int rejecting;     /* client: ngtcp2 is dropping the streams of refused 0-RTT */
  size_t next_file;  /* client: files whose request stream is open */
  size_t completed; /* client: files fetched on this connection */
  ngtcp2_tstamp completed_at; /* client: when the last file arrived, waiting for a ticket */
  char error[256];  /* client: why a stream or the connection failed */
};

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) {
  return ((struct conn *)ref->user_data)->conn;
}

static void link_stream(struct conn *c, struct stream *s) {
  s->next = NULL;
  s->prev = c->tail;
  if (c->tail) c->tail->next = s;
  else c->head = s;
  c->tail = s;
}

static void unlink_stream(struct conn *c, struct stream *s) {
  if (s->prev) s->prev->next = s->next;
  else c->head = s->next;
  if (s->next) s->next->prev = s->prev;
  else c->tail = s->prev;
}

static void conn_free(struct conn *c) {
  struct stream *s = c->head;
  while (s) {
    struct stream *n = s->next;
    stream_free(s);
    s = n;
  }
  if (c->conn) ngtcp2_conn_del(c->conn);
  if (c->tls) gnutls_deinit(c->tls);
  free(c);
}

static void send_datagram(struct conn *c, const ngtcp2_path *path, const ngtcp2_pkt_info *pi,
                          const uint8_t *buf, size_t n) {
  ssize_t rv;
  ecn_set(c->fd, path->remote.addr->sa_family, pi->ecn);
  do {
    if (c->connected) rv = send(c->fd, buf, n, 0);
    else rv = sendto(c->fd, buf, n, 0, (const struct sockaddr *)path->remote.addr,
                     path->remote.addrlen);
  } while (rv < 0 && errno == EINTR);
  /* EAGAIN or a full queue: the datagram is lost, as on the network; ngtcp2 recovers. */
}

/* Closes with CONNECTION_CLOSE for `liberr` (0: NO_ERROR) and marks the connection dead. */
static void conn_close(struct conn *c, int liberr) {
  ngtcp2_connection_close_error ccerr;
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  uint8_t buf[MAX_PKT];
  if (c->dead) return;
  if (liberr == 0)
    ngtcp2_connection_close_error_set_transport_error(&ccerr, NGTCP2_NO_ERROR, NULL, 0);
  else if (liberr == NGTCP2_ERR_CRYPTO)
    ngtcp2_connection_close_error_set_transport_error_tls_alert(
        &ccerr, ngtcp2_conn_get_tls_alert(c->conn), NULL, 0);
  else ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, liberr, NULL, 0);
  ngtcp2_path_storage_zero(&ps);
  memset(&pi, 0, sizeof(pi));
  if (!ngtcp2_conn_is_in_closing_period(c->conn) && !ngtcp2_conn_is_in_draining_period(c->conn)) {
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, buf, sizeof(buf),
                                                        &ccerr, now_ns());
    if (n > 0) send_datagram(c, &ps.path, &pi, buf, (size_t)n);
  }
  c->dead = 1;
  c->dead_until = now_ns() + 3 * ngtcp2_conn_get_pto(c->conn);
}

/* The stream with bytes to send, not blocked in this round. */
static struct stream *sendable(struct conn *c) {
  for (struct stream *s = c->head; s; s = s->next)
    if (s->out && !s->fin_sent && s->blocked_round != c->round) return s;
  return NULL;
}

static uint64_t files_served; /* server: files whose FIN went out */
static uint64_t handshakes;   /* either role: handshakes completed */
static struct negotiated neg; /* either role: what the last handshake negotiated */

/* Writes everything ngtcp2 lets out now (at most BURST datagrams); <0: fatal. */
static int conn_write(struct conn *c) {
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  uint8_t buf[MAX_PKT];
  ngtcp2_tstamp ts = now_ns();
  size_t max = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->conn);
  if (max > sizeof(buf)) max = sizeof(buf);
  ngtcp2_path_storage_zero(&ps);
  c->round++;
  /* Bounded also in calls: every stream can be blocked or packed once per datagram. */
  for (int pkts = 0, calls = 0; pkts < BURST && calls < BURST * 4096; calls++) {
    struct stream *s = sendable(c);
    ngtcp2_vec v;
    ngtcp2_ssize ndatalen = -1;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
    int64_t sid = -1;
    size_t vcnt = 0;
    if (s) {
      sid = s->id;
      v.base = s->out + s->outoff;
      v.len = s->outlen - s->outoff;
      vcnt = 1;
      flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    }
    memset(&pi, 0, sizeof(pi));
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, buf, max, &ndatalen, flags,
                                               sid, s ? &v : NULL, vcnt, ts);
    if (n < 0) {
      switch (n) {
      case NGTCP2_ERR_STREAM_DATA_BLOCKED:
        if (s) s->blocked_round = c->round;
        continue;
      case NGTCP2_ERR_STREAM_SHUT_WR:
      case NGTCP2_ERR_STREAM_NOT_FOUND:
        if (s) s->fin_sent = 1;
        continue;
      case NGTCP2_ERR_WRITE_MORE:
        if (s && ndatalen >= 0) {
          s->outoff += (size_t)ndatalen;
          if (s->outoff == s->outlen) {
            s->fin_sent = 1;
            if (!c->connected) files_served++;
          }
        }
        continue;
      default:
        return (int)n;
      }
    }
    if (s && ndatalen >= 0) {
      s->outoff += (size_t)ndatalen;
      if (s->outoff == s->outlen) {
        s->fin_sent = 1;
        if (!c->connected) files_served++;
      }
    }
    if (n == 0) break;
    send_datagram(c, &ps.path, &pi, buf, (size_t)n);
    pkts++;
  }
  ngtcp2_conn_update_pkt_tx_time(c->conn, ts);
  return 0;
}

/* Records why a client connection failed (the first reason wins). */
static void fail(struct conn *c, const char *fmt, ...) {
  va_list ap;
  if (c->error[0]) return;
  va_start(ap, fmt);
  vsnprintf(c->error, sizeof(c->error), fmt, ap);
  va_end(ap);
}

/* A stream is gone both ways: a client stream must have had its FIN first; a server
 * gives the client credit for another stream (ngtcp2 does not on its own). */
static int stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
                           uint64_t app_error_code, void *user_data, void *stream_user_data) {
  struct conn *c = user_data;
  struct stream *s = stream_user_data;
  if (s && c->connected && !s->done && !c->rejecting)
    fail(c, "stream %lld (%s) closed before its FIN%s (0x%llx)", (long long)stream_id, s->name,
         (flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) ? "" : " without an error code",
         (unsigned long long)app_error_code);
  if (s) {
    unlink_stream(c, s);
    stream_free(s);
  }
  if (!c->connected && ngtcp2_is_bidi_stream(stream_id) &&
      !ngtcp2_conn_is_local_stream(conn, stream_id))
    ngtcp2_conn_extend_max_streams_bidi(conn, 1);
  return 0;
}

static void client_handshake_completed(struct conn *c);

static int handshake_completed_cb(ngtcp2_conn *conn, void *user_data) {
  struct conn *c = user_data;
  c->handshake_done = 1;
  handshakes++;
  read_negotiated(conn, c->tls, &neg);
  /* The server's session ticket, once the handshake is done (GnuTLS does not send it
   * on its own here: GNUTLS_NO_AUTO_SEND_TICKET). */
  if (!c->connected && prof.resume && gnutls_session_ticket_send(c->tls, 1, 0) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  if (c->connected) client_handshake_completed(c);
  return 0;
}

static int handshake_confirmed_cb(ngtcp2_conn *conn, void *user_data) {
  (void)conn;
  ((struct conn *)user_data)->confirmed = 1;
  return 0;
}

static int extend_max_stream_data_cb(ngtcp2_conn *conn, int64_t stream_id, uint64_t max_data,
                                     void *user_data, void *stream_user_data) {
  (void)conn;
  (void)stream_id;
  (void)max_data;
  (void)user_data;
  (void)stream_user_data;
  return 0; /* the next conn_write tries every stream again */
}

static int recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
                               uint64_t offset, const uint8_t *data, size_t datalen,
                               void *user_data, void *stream_user_data);

static void base_callbacks(ngtcp2_callbacks *cb) {
  memset(cb, 0, sizeof(*cb));
  cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb->encrypt = ngtcp2_crypto_encrypt_cb;
  cb->decrypt = ngtcp2_crypto_decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->rand = rand_cb;
  cb->get_new_connection_id = get_new_connection_id_cb;
  cb->update_key = ngtcp2_crypto_update_key_cb;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb->handshake_completed = handshake_completed_cb;
  cb->stream_close = stream_close_cb;
  cb->recv_stream_data = recv_stream_data_cb;
  cb->handshake_confirmed = handshake_confirmed_cb;
  cb->extend_max_stream_data = extend_max_stream_data_cb;
}

static void base_settings(ngtcp2_settings *st, ngtcp2_transport_params *pa) {
  uint64_t sw = prof.small_windows ? SMALL_STREAM_WINDOW : DEFAULT_WINDOW;
  uint64_t cw = prof.small_windows ? SMALL_CONN_WINDOW : DEFAULT_WINDOW;
  ngtcp2_settings_default(st);
  st->initial_ts = now_ns();
  if (debug_log) st->log_printf = log_printf;
  /* No auto-tuning beyond the test case's windows. */
  st->max_window = cw;
  st->max_stream_window = sw;
  /* ngtcp2's default handshake timeout (10 s) ends handshakes that the loss test cases
   * (30 % each way, PTO backing off) legitimately take longer for; the idle timeout and
   * the client's --timeout-secs still bound them. */
  st->handshake_timeout = HANDSHAKE_TIMEOUT;
  ngtcp2_transport_params_default(pa);
  pa->initial_max_stream_data_bidi_local = sw;
  pa->initial_max_stream_data_bidi_remote = sw;
  pa->initial_max_stream_data_uni = sw;
  pa->initial_max_data = cw;
  pa->max_idle_timeout = IDLE_TIMEOUT;
}

/* ------------------------------------------------------------------ tickets */

/* Session tickets and 0-RTT (prof.resume, prof.zero_rtt). The server encrypts its
 * tickets with a key made at start (gnutls_session_ticket_enable_server) and, in
 * zerortt, accepts early data with GnuTLS's anti-replay check of the ticket's age (no
 * replay database: every ClientHello is fresh in a test). The client keeps the session
 * of the last NewSessionTicket (gnutls_session_get_data2) with the server's transport
 * parameters, and a later connection resumes it (gnutls_session_set_data) and, in
 * zerortt, opens its streams before the handshake completes on those parameters
 * (ngtcp2_conn_set_early_remote_transport_params). */
static gnutls_datum_t ticket_key;
static gnutls_anti_replay_t anti_replay;

static struct {
  gnutls_datum_t data; /* the session to resume (gnutls_free) */
  ngtcp2_transport_params params;
  int have;
  uint64_t resumed, early_accepted;
} ticket;

static int anti_replay_add(void *db, time_t exp, const gnutls_datum_t *key,
                           const gnutls_datum_t *data) {
  (void)db;
  (void)exp;
  (void)key;
  (void)data;
  return 0;
}

static int tickets_server(gnutls_session_t s) {
  if (!ticket_key.data) {
    if (gnutls_session_ticket_key_generate(&ticket_key) < 0) return -1;
    if (gnutls_anti_replay_init(&anti_replay) < 0) return -1;
    gnutls_anti_replay_set_add_function(anti_replay, anti_replay_add);
    gnutls_anti_replay_set_ptr(anti_replay, NULL);
  }
  if (gnutls_session_ticket_enable_server(s, &ticket_key) < 0) return -1;
  if (prof.zero_rtt) {
    gnutls_anti_replay_enable(s, anti_replay);
    gnutls_record_set_max_early_data_size(s, 0xffffffffu);
  }
  return 0;
}

/* Client: a NewSessionTicket arrived; keep the session and the server's parameters. */
static int ticket_hook(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
                       const gnutls_datum_t *msg) {
  (void)when;
  (void)incoming;
  (void)msg;
  if (htype != GNUTLS_HANDSHAKE_NEW_SESSION_TICKET) return 0;
  struct conn *c = ((ngtcp2_crypto_conn_ref *)gnutls_session_get_ptr(s))->user_data;
  const ngtcp2_transport_params *tp = ngtcp2_conn_get_remote_transport_params(c->conn);
  gnutls_datum_t d = {NULL, 0};
  if (!tp || gnutls_session_get_data2(s, &d) < 0) return 0;
  gnutls_free(ticket.data.data);
  ticket.data = d;
  ticket.params = *tp;
  ticket.have = 1;
  return 0;
}

static int tickets_client(struct conn *c) {
  gnutls_handshake_set_hook_function(c->tls, GNUTLS_HANDSHAKE_NEW_SESSION_TICKET,
                                     GNUTLS_HOOK_POST, ticket_hook);
  if (!ticket.have) return 0;
  if (gnutls_session_set_data(c->tls, ticket.data.data, ticket.data.size) < 0) return -1;
  if (prof.zero_rtt) {
    ngtcp2_conn_set_early_remote_transport_params(c->conn, &ticket.params);
    c->early = 1;
  }
  return 0;
}

/* Client: whether the session was resumed and the 0-RTT accepted; refused 0-RTT drops
 * the streams (ngtcp2_conn_early_data_rejected), whose requests go again in 1-RTT. */
static void client_handshake_completed(struct conn *c) {
  if (!prof.resume) return;
  if (gnutls_session_is_resumed(c->tls)) ticket.resumed++;
  if (!c->early) return;
  if (gnutls_session_get_flags(c->tls) & GNUTLS_SFLAGS_EARLY_DATA) {
    ticket.early_accepted++;
    return;
  }
  c->rejecting = 1;
  ngtcp2_conn_early_data_rejected(c->conn);
  c->rejecting = 0;
  while (c->head) {
    struct stream *s = c->head;
    unlink_stream(c, s);
    stream_free(s);
  }
  c->next_file = 0;
}

static int tls_session(struct conn *c, unsigned flags) {
  gnutls_datum_t alpn = {(unsigned char *)ALPN, sizeof(ALPN) - 1};
  int server = (flags & GNUTLS_SERVER) != 0;
  if (prof.zero_rtt) flags |= GNUTLS_ENABLE_EARLY_DATA;
  if (gnutls_init(&c->tls, flags | GNUTLS_NO_END_OF_EARLY_DATA) < 0) return -1;
  if (gnutls_priority_set_direct(c->tls, priority(), NULL) < 0) return -1;
  if ((server ? ngtcp2_crypto_gnutls_configure_server_session(c->tls)
              : ngtcp2_crypto_gnutls_configure_client_session(c->tls)) != 0)
    return -1;
  /* libngtcp2_crypto_gnutls 0.12 reads an ngtcp2_crypto_conn_ref from the session's ptr. */
  c->ref.get_conn = get_conn;
  c->ref.user_data = c;
  gnutls_session_set_ptr(c->tls, &c->ref);
  if (gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE,
                             server ? server_cred : client_cred) < 0)
    return -1;
  if (gnutls_alpn_set_protocols(c->tls, &alpn, 1, server ? GNUTLS_ALPN_MANDATORY : 0) < 0)
    return -1;
  if (!server && gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, "localhost", 9) < 0) return -1;
  if (prof.resume && (server ? tickets_server(c->tls) : tickets_client(c)) != 0) return -1;
  ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
  return 0;
}

/* ------------------------------------------------------------------ server */

static struct {
  uint64_t refused, retry_sent;
  const char *root;
  int fd;
  struct sockaddr_storage local;
  socklen_t locallen;
  struct conn **conns;
  size_t n, cap;
} srv;

/* The file a request names under the root, read whole; the path guard of quill's file
 * service (docs/SPEC.md §10): relative, no empty, `.` or `..` part, no control
 * character, no upload temporary name; at most MAX_REQUEST bytes and MAX_FILE. */
static int read_requested(const uint8_t *req, size_t len, uint8_t **out, size_t *outlen) {
  char line[MAX_REQUEST + 1], full[4096 + 512];
  if (len > MAX_REQUEST || memchr(req, 0, len)) return -1;
  memcpy(line, req, len);
  line[len] = 0;
  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n')) line[--len] = 0;
  if (strncmp(line, "GET /", 5) != 0) return -1;
  const char *path = line + 5;
  if (!*path) return -1;
  for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
    if (*p < 0x20 || *p == 0x7f) return -1;
    if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) return -1; /* U+0080..U+009F */
  }
  const char *part = path;
  for (;;) {
    const char *slash = strchr(part, '/');
    size_t pl = slash ? (size_t)(slash - part) : strlen(part);
    if (pl == 0 || (pl == 1 && part[0] == '.') || (pl == 2 && part[0] == '.' && part[1] == '.'))
      return -1;
    if (part[0] == '.' && pl > 4 && memcmp(part + pl - 4, ".tmp", 4) == 0 &&
        memmem(part, pl, ".quill-", 7))
      return -1;
    if (!slash) break;
    part = slash + 1;
  }
  if ((size_t)snprintf(full, sizeof(full), "%s/%s", srv.root, path) >= sizeof(full)) return -1;
  struct stat st;
  if (stat(full, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_FILE) return -1;
  FILE *f = fopen(full, "rb");
  if (!f) return -1;
  size_t size = (size_t)st.st_size;
  uint8_t *data = malloc(size ? size : 1);
  if (!data || fread(data, 1, size, f) != size) {
    free(data);
    fclose(f);
    return -1;
  }
  fclose(f);
  *out = data;
  *outlen = size;
  return 0;
}

static void refuse(struct conn *c, struct stream *s) {
  s->done = 1;
  srv.refused++;
  ngtcp2_conn_shutdown_stream(c->conn, s->id, 0x10);
}

/* Request bytes on a client's stream (the first ones make the stream). */
static void server_request(struct conn *c, uint32_t flags, int64_t stream_id, struct stream *s,
                           const uint8_t *data, size_t datalen) {
  if (!s) {
    s = xcalloc(1, sizeof(*s));
    s->id = stream_id;
    link_stream(c, s);
    ngtcp2_conn_set_stream_user_data(c->conn, stream_id, s);
  }
  if (s->done) return;
  if (append(s, data, datalen, MAX_REQUEST) != 0) {
    refuse(c, s);
    return;
  }
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) {
    if (read_requested(s->in, s->inlen, &s->out, &s->outlen) != 0) {
      refuse(c, s);
      return;
    }
    s->done = 1;
  }
}

static int same_cid(const ngtcp2_cid *a, const uint8_t *d, size_t dl) {
  return a->datalen == dl && memcmp(a->data, d, dl) == 0;
}

static struct conn *server_find(const uint8_t *dcid, size_t dcidlen) {
  for (size_t i = 0; i < srv.n; i++) {
    struct conn *c = srv.conns[i];
    if (same_cid(&c->first_dcid, dcid, dcidlen)) return c;
    size_t k = ngtcp2_conn_get_num_scid(c->conn);
    ngtcp2_cid *ids = xcalloc(k ? k : 1, sizeof(*ids));
    ngtcp2_conn_get_scid(c->conn, ids);
    int hit = 0;
    for (size_t j = 0; j < k && !hit; j++) hit = same_cid(&ids[j], dcid, dcidlen);
    free(ids);
    if (hit) return c;
  }
  return NULL;
}

static void server_send_raw(const uint8_t *buf, ngtcp2_ssize n, const struct sockaddr *to,
                            socklen_t tolen) {
  if (n > 0) (void)sendto(srv.fd, buf, (size_t)n, 0, to, tolen);
}

static void send_retry(const ngtcp2_pkt_hd *hd, const struct sockaddr *remote, socklen_t rlen) {
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN], buf[MAX_PKT];
  ngtcp2_cid scid;
  scid.datalen = SCID_LEN;
  gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, SCID_LEN);
  ngtcp2_ssize tl = ngtcp2_crypto_generate_retry_token(
      token, static_secret, sizeof(static_secret), hd->version, (const ngtcp2_sockaddr *)remote,
      rlen, &scid, &hd->dcid, now_ns());
  if (tl < 0) return;
  ngtcp2_ssize n = ngtcp2_crypto_write_retry(buf, sizeof(buf), hd->version, &hd->scid, &scid,
                                             &hd->dcid, token, (size_t)tl);
  if (n > 0) {
    server_send_raw(buf, n, remote, rlen);
    srv.retry_sent++;
  }
}

static struct conn *server_accept(const ngtcp2_pkt_hd *hd, const ngtcp2_cid *odcid,
                                  const ngtcp2_cid *retry_scid, const ngtcp2_path *path) {
  ngtcp2_callbacks cb;
  ngtcp2_settings st;
  ngtcp2_transport_params pa;
  ngtcp2_cid scid;
  struct conn *c = xcalloc(1, sizeof(*c));
  c->fd = srv.fd;
  base_callbacks(&cb);
  cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  base_settings(&st, &pa);
  st.token = hd->token;
  pa.initial_max_streams_bidi = prof.max_streams_bidi;
  pa.initial_max_streams_uni = 0;
  pa.original_dcid = *odcid;
  if (retry_scid) {
    pa.retry_scid = *retry_scid;
    pa.retry_scid_present = 1;
  }
  scid.datalen = SCID_LEN;
  gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, SCID_LEN);
  if (ngtcp2_crypto_generate_stateless_reset_token(pa.stateless_reset_token, static_secret,
                                                   sizeof(static_secret), &scid) == 0)
    pa.stateless_reset_token_present = 1;
  if (ngtcp2_conn_server_new(&c->conn, &hd->scid, &scid, path, hd->version, &cb, &st, &pa, NULL,
                             c) != 0) {
    free(c);
    return NULL;
  }
  if (tls_session(c, GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET) != 0) {
    conn_free(c);
    return NULL;
  }
  c->first_dcid = hd->dcid;
  if (srv.n == srv.cap) {
    srv.cap = srv.cap ? srv.cap * 2 : 16;
    srv.conns = realloc(srv.conns, srv.cap * sizeof(*srv.conns));
    if (!srv.conns) die("out of memory");
  }
  srv.conns[srv.n++] = c;
  return c;
}

static void server_datagram(const uint8_t *data, size_t len, struct sockaddr_storage *remote,
                            socklen_t rlen, uint32_t ecn) {
  ngtcp2_version_cid vc;
  ngtcp2_path path;
  ngtcp2_pkt_info pi;
  path.local.addr = (ngtcp2_sockaddr *)&srv.local;
  path.local.addrlen = srv.locallen;
  path.remote.addr = (ngtcp2_sockaddr *)remote;
  path.remote.addrlen = rlen;
  path.user_data = NULL;
  if (ngtcp2_pkt_decode_version_cid(&vc, data, len, SCID_LEN) != 0) return;
  struct conn *c = server_find(vc.dcid, vc.dcidlen);
  ngtcp2_pkt_hd hd;
  int fresh = !c;
  if (c && c->dead) return; /* absorbed until the connection is dropped */
  if (!c) {
    ngtcp2_cid odcid, *retry_scid = NULL;
    if (ngtcp2_accept(&hd, data, len) != 0) return;
    odcid = hd.dcid;
    if (hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
      /* The answer to a Retry, ours by test case or by ngtcp2's request (below). A token
       * that does not verify is dropped silently: RFC 9000 §8.1.3 asks for INVALID_TOKEN
       * only for an Initial that is "otherwise valid", which this server cannot tell
       * before decrypting it, and in handshakecorruption the usual cause is a flipped
       * byte in the Destination CID (the token binds it). ngtcp2's example server answers
       * INVALID_TOKEN; here that answer came from a new Source CID (the corrupted DCID)
       * and counted as an extra handshake on the capture. */
      if (ngtcp2_crypto_verify_retry_token(&odcid, hd.token.base, hd.token.len, static_secret,
                                           sizeof(static_secret), hd.version,
                                           (const ngtcp2_sockaddr *)remote, rlen, &hd.dcid,
                                           RETRY_TOKEN_LIFETIME, now_ns()) != 0)
        return;
      retry_scid = &hd.dcid;
    } else if (prof.retry) {
      send_retry(&hd, (struct sockaddr *)remote, rlen);
      return;
    }
    c = server_accept(&hd, &odcid, retry_scid, &path);
    if (!c) return;
  }
  memset(&pi, 0, sizeof(pi));
  pi.ecn = ecn;
  int rv = ngtcp2_conn_read_pkt(c->conn, &path, &pi, data, len, now_ns());
  if (rv == 0) return;
  if (rv == NGTCP2_ERR_RETRY && fresh) {
    /* ngtcp2 0.12 asks for a Retry (and no state) when a connection's first Initial
     * does not hold the start of the ClientHello, e.g. the second datagram of a
     * two-datagram ClientHello arrived alone. Only a new connection gets it. */
    send_retry(&hd, (struct sockaddr *)remote, rlen);
    c->dead = 1;
    c->dead_until = 0;
    return;
  }
  if (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_DROP_CONN || rv == NGTCP2_ERR_RETRY) {
    c->dead = 1;
    c->dead_until = now_ns() + (rv == NGTCP2_ERR_DRAINING ? 3 * ngtcp2_conn_get_pto(c->conn) : 0);
    return;
  }
  if (debug_log) fprintf(debug_log, "ngtcp2-peer: read_pkt: %s\n", ngtcp2_strerror(rv));
  conn_close(c, rv);
}

static void server_report(void) {
  printf("{\"role\":\"server\",\"stack\":\"" STACK "\",\"connections\":%llu,"
         "\"files_served\":%llu,\"refused\":%llu,\"retry_sent\":%llu,",
         (unsigned long long)handshakes, (unsigned long long)files_served,
         (unsigned long long)srv.refused, (unsigned long long)srv.retry_sent);
  print_negotiated(stdout, &neg);
  printf("}\n");
  fflush(stdout);
}

static int run_server(const char *listen_addr) {
  struct sockaddr_storage ss;
  socklen_t sl;
  char shown[128];
  uint8_t buf[65536];
  int stdin_open = 1;
  if (parse_addr(listen_addr, &ss, &sl) != 0) die("bad --listen address %s", listen_addr);
  make_server_credentials();
  srv.fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (srv.fd < 0) die("socket: %s", strerror(errno));
  if (ss.ss_family == AF_INET6) {
    int on = 1;
    setsockopt(srv.fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
  }
  if (bind(srv.fd, (struct sockaddr *)&ss, sl) != 0) die("bind %s: %s", listen_addr, strerror(errno));
  ecn_enable(srv.fd, ss.ss_family);
  srv.locallen = sizeof(srv.local);
  getsockname(srv.fd, (struct sockaddr *)&srv.local, &srv.locallen);
  format_addr(&srv.local, shown, sizeof(shown));
  printf("listening %s\n", shown);
  fflush(stdout);
  while (stdin_open) {
    ngtcp2_tstamp now = now_ns(), next = now + NGTCP2_SECONDS;
    for (size_t i = 0; i < srv.n; i++) {
      struct conn *c = srv.conns[i];
      ngtcp2_tstamp t = c->dead ? c->dead_until : ngtcp2_conn_get_expiry(c->conn);
      if (t < next) next = t;
    }
    int ms = next <= now ? 0 : (int)((next - now + NGTCP2_MILLISECONDS - 1) / NGTCP2_MILLISECONDS);
    struct pollfd fds[2] = {{srv.fd, POLLIN, 0}, {0, POLLIN, 0}};
    if (poll(fds, 2, ms) < 0 && errno != EINTR) die("poll: %s", strerror(errno));
    if (fds[1].revents) {
      ssize_t r = read(0, buf, sizeof(buf));
      if (r <= 0 && !(r < 0 && errno == EINTR)) stdin_open = 0;
    }
    if (fds[0].revents & POLLIN) {
      for (int k = 0; k < 256; k++) {
        struct sockaddr_storage remote;
        socklen_t rl = sizeof(remote);
        uint32_t ecn;
        ssize_t r = recv_ecn(srv.fd, buf, sizeof(buf), &remote, &rl, &ecn);
        if (r < 0) break;
        server_datagram(buf, (size_t)r, &remote, rl, ecn);
      }
    }
    now = now_ns();
    for (size_t i = 0; i < srv.n; i++) {
      struct conn *c = srv.conns[i];
      if (c->dead) continue;
      if (ngtcp2_conn_get_expiry(c->conn) <= now) {
        int rv = ngtcp2_conn_handle_expiry(c->conn, now);
        if (rv != 0) {
          /* Idle or handshake timeout: nothing to tell the peer. */
          c->dead = 1;
          c->dead_until = now;
          continue;
        }
      }
      int rv = conn_write(c);
      if (rv != 0) conn_close(c, rv);
    }
    for (size_t i = 0; i < srv.n;) {
      struct conn *c = srv.conns[i];
      if (c->dead && c->dead_until <= now) {
        conn_free(c);
        srv.conns[i] = srv.conns[--srv.n];
      } else i++;
    }
  }
  server_report();
  for (size_t i = 0; i < srv.n; i++) conn_free(srv.conns[i]);
  free(srv.conns);
  return 0;
}

/* ------------------------------------------------------------------ client */

static struct {
  uint64_t files, bytes, retries, key_updates;
  const char *download;
  const char *error_kind;
  char error[512];
} cli;

/* Writes a downloaded file under --download (names from our own list; still guarded). */
static int save(const char *name, const uint8_t *data, size_t len) {
  char path[4096 + 512];
  if (!*name || name[0] == '/') return -1;
  for (const char *p = name; *p;) {
    const char *slash = strchr(p, '/');
    size_t pl = slash ? (size_t)(slash - p) : strlen(p);
    if (pl == 0 || (pl == 1 && p[0] == '.') || (pl == 2 && p[0] == '.' && p[1] == '.')) return -1;
    if (!slash) break;
    p = slash + 1;
  }
  if ((size_t)snprintf(path, sizeof(path), "%s/%s", cli.download, name) >= sizeof(path)) return -1;
  for (char *p = path + strlen(cli.download) + 1; (p = strchr(p, '/')); p++) {
    *p = 0;
    mkdir(path, 0755);
    *p = '/';
  }
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  int ok = fwrite(data, 1, len, f) == len;
  return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Response bytes on one of our streams; the file is written at the FIN. */
static void client_response(struct conn *c, uint32_t flags, struct stream *s,
                            const uint8_t *data, size_t datalen) {
  if (!s || s->done) return;
  if (append(s, data, datalen, MAX_FILE) != 0) {
    fail(c, "response to %s larger than %llu bytes", s->name, (unsigned long long)MAX_FILE);
    return;
  }
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) {
    if (save(s->name, s->in ? s->in : (const uint8_t *)"", s->inlen) != 0) {
      fail(c, "cannot write %s under %s", s->name, cli.download);
      return;
    }
    s->done = 1;
    c->completed++;
    cli.files++;
    cli.bytes += s->inlen;
    free(s->in);
    s->in = NULL;
    s->inlen = s->incap = 0;
  }
}

/* Stream data in either role: the bytes are consumed at once, so the windows move on. */
static int recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id,
                               uint64_t offset, const uint8_t *data, size_t datalen,
                               void *user_data, void *stream_user_data) {
  struct conn *c = user_data;
  (void)offset;
  ngtcp2_conn_extend_max_stream_offset(conn, stream_id, datalen);
  ngtcp2_conn_extend_max_offset(conn, datalen);
  if (c->connected) client_response(c, flags, stream_user_data, data, datalen);
  else server_request(c, flags, stream_id, stream_user_data, data, datalen);
  return 0;
}

static int client_stream_reset(ngtcp2_conn *conn, int64_t stream_id, uint64_t final_size,
                               uint64_t app_error_code, void *user_data, void *stream_user_data) {
  struct stream *s = stream_user_data;
  (void)conn;
  (void)final_size;
  if (s && !s->done)
    fail(user_data, "stream %lld (%s) reset (0x%llx)", (long long)stream_id, s->name,
         (unsigned long long)app_error_code);
  return 0;
}

static int client_recv_retry(ngtcp2_conn *conn, const ngtcp2_pkt_hd *hd, void *user_data) {
  struct conn *c = user_data;
  if (ngtcp2_crypto_recv_retry_cb(conn, hd, user_data) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  if (!c->retried) cli.retries++;
  c->retried = 1;
  return 0;
}

/* The peer's CONNECTION_CLOSE, as text. */
static void peer_close_reason(struct conn *c, char *out, size_t n) {
  ngtcp2_connection_close_error e;
  ngtcp2_conn_get_connection_close_error(c->conn, &e);
  snprintf(out, n, "%s error 0x%llx%s%.*s",
           e.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION ? "application"
                                                                         : "transport",
           (unsigned long long)e.error_code, e.reasonlen ? ": " : "",
           (int)(e.reasonlen > 200 ? 200 : e.reasonlen), e.reason ? (const char *)e.reason : "");
}

static void client_error(const char *kind, const char *fmt, ...) {
  va_list ap;
  if (cli.error_kind) return;
  cli.error_kind = kind;
  va_start(ap, fmt);
  vsnprintf(cli.error, sizeof(cli.error), fmt, ap);
  va_end(ap);
}

/* One connection fetching names[0..n]; 0 when every file arrived. */
static int client_connection(const struct sockaddr_storage *server, socklen_t slen, char **names,
                             size_t n, ngtcp2_tstamp deadline) {
  ngtcp2_callbacks cb;
  ngtcp2_settings st;
  ngtcp2_transport_params pa;
  ngtcp2_cid dcid, scid;
  ngtcp2_path path;
  uint8_t buf[65536];
  int result = -1;
  struct conn *c = xcalloc(1, sizeof(*c));
  c->connected = 1;
  c->fd = socket(server->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0 || connect(c->fd, (const struct sockaddr *)server, slen) != 0) {
    client_error("io", "socket/connect: %s", strerror(errno));
    goto out;
  }
  c->locallen = sizeof(c->local);
  getsockname(c->fd, (struct sockaddr *)&c->local, &c->locallen);
  ecn_enable(c->fd, server->ss_family);
  base_callbacks(&cb);
  cb.client_initial = ngtcp2_crypto_client_initial_cb;
  cb.recv_retry = client_recv_retry;
  cb.stream_reset = client_stream_reset;
  base_settings(&st, &pa);
  pa.initial_max_streams_bidi = 0;
  pa.initial_max_streams_uni = 0;
  dcid.datalen = SCID_LEN;
  scid.datalen = SCID_LEN;
  gnutls_rnd(GNUTLS_RND_RANDOM, dcid.data, SCID_LEN);
  gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, SCID_LEN);
  path.local.addr = (ngtcp2_sockaddr *)&c->local;
  path.local.addrlen = c->locallen;
  path.remote.addr = (ngtcp2_sockaddr *)server;
  path.remote.addrlen = slen;
  path.user_data = NULL;
  if (ngtcp2_conn_client_new(&c->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &st, &pa,
                             NULL, c) != 0 ||
      tls_session(c, GNUTLS_CLIENT) != 0) {
    client_error("io", "cannot set up the connection");
    goto out;
  }
  for (;;) {
    ngtcp2_tstamp now = now_ns();
    if (c->error[0]) {
      client_error("stream", "%s", c->error);
      conn_close(c, 0);
      goto out;
    }
    /* resumption, zerortt: the first connection waits (at most 3 s) for its ticket. */
    if (c->completed == n && prof.resume && !ticket.have && !c->completed_at)
      c->completed_at = now;
    if (c->completed == n &&
        (!prof.resume || ticket.have || now >= c->completed_at + 3 * NGTCP2_SECONDS)) {
      conn_close(c, 0);
      result = 0;
      goto out;
    }
    if (now >= deadline) {
      client_error("timeout", "%zu of %zu files on this connection when the time ran out",
                   c->completed, n);
      goto out;
    }
    if (c->handshake_done || c->early) {
      while (c->next_file < n && ngtcp2_conn_get_streams_bidi_left(c->conn) > 0) {
        const char *name = names[c->next_file];
        struct stream *s = xcalloc(1, sizeof(*s));
        size_t len = strlen(name) + 7;
        s->name = name;
        s->out = xcalloc(1, len + 1);
        snprintf((char *)s->out, len + 1, "GET /%s\r\n", name);
        s->outlen = len;
        if (ngtcp2_conn_open_bidi_stream(c->conn, &s->id, s) != 0) {
          stream_free(s);
          break;
        }
        link_stream(c, s);
        c->next_file++;
      }
      if (prof.key_update && c->handshake_done && c->confirmed && !c->key_update_done &&
          ngtcp2_conn_initiate_key_update(c->conn, now) == 0) {
        c->key_update_done = 1;
        cli.key_updates++;
      }
    }
    int rv = conn_write(c);
    if (rv != 0) {
      client_error(c->handshake_done ? "io" : "handshake", "write: %s", ngtcp2_strerror(rv));
      conn_close(c, rv);
      goto out;
    }
    ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(c->conn), wake = deadline;
    if (expiry < wake) wake = expiry;
    now = now_ns();
    int ms = wake <= now ? 0 : (int)((wake - now + NGTCP2_MILLISECONDS - 1) / NGTCP2_MILLISECONDS);
    if (ms > 1000) ms = 1000;
    struct pollfd pfd = {c->fd, POLLIN, 0};
    if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
      client_error("io", "poll: %s", strerror(errno));
      goto out;
    }
    if (pfd.revents & (POLLIN | POLLERR)) {
      for (int k = 0; k < 256; k++) {
        uint32_t ecn;
        ssize_t r = recv_ecn(c->fd, buf, sizeof(buf), NULL, NULL, &ecn);
        if (r < 0 && errno == ECONNREFUSED) continue; /* an ICMP error, now read */
        if (r < 0) break;
        ngtcp2_pkt_info pi;
        memset(&pi, 0, sizeof(pi));
        pi.ecn = ecn;
        rv = ngtcp2_conn_read_pkt(c->conn, &path, &pi, buf, (size_t)r, now_ns());
        if (rv == 0) continue;
        if (c->completed == n) break;
        if (rv == NGTCP2_ERR_DRAINING) {
          char why[300];
          peer_close_reason(c, why, sizeof(why));
          client_error(c->handshake_done ? "closed_by_peer" : "handshake",
                       "the server closed the connection: %s", why);
        } else {
          client_error(c->handshake_done ? "io" : "handshake", "read: %s", ngtcp2_strerror(rv));
          conn_close(c, rv);
        }
        goto out;
      }
    }
    now = now_ns();
    if (ngtcp2_conn_get_expiry(c->conn) <= now) {
      rv = ngtcp2_conn_handle_expiry(c->conn, now);
      if (rv != 0) {
        client_error(c->handshake_done ? "idle_timeout" : "handshake", "%s",
                     ngtcp2_strerror(rv));
        goto out;
      }
    }
  }
out:
  if (c->fd >= 0) close(c->fd);
  conn_free(c);
  return result;
}

/* The report's "resumed" and "zero_rtt_accepted": counts where the test case asks
 * for them, null otherwise. */
static const char *resumption_counts(void) {
  static char out[96];
  if (!prof.resume) return "\"resumed\":null,\"zero_rtt_accepted\":null,";
  if (!prof.zero_rtt)
    snprintf(out, sizeof(out), "\"resumed\":%llu,\"zero_rtt_accepted\":null,",
             (unsigned long long)ticket.resumed);
  else
    snprintf(out, sizeof(out), "\"resumed\":%llu,\"zero_rtt_accepted\":%llu,",
             (unsigned long long)ticket.resumed, (unsigned long long)ticket.early_accepted);
  return out;
}

static void client_report(double secs) {
  printf("{\"role\":\"client\",\"stack\":\"" STACK "\",\"ok\":%s,\"handshakes\":%llu,"
         "\"files\":%llu,\"bytes\":%llu,\"seconds\":%.6f,\"goodput_bps\":%.1f,"
         "\"retries\":%llu,\"key_updates_initiated\":%llu,%s",
         cli.error_kind ? "false" : "true", (unsigned long long)handshakes,
         (unsigned long long)cli.files, (unsigned long long)cli.bytes, secs,
         secs > 0 ? (double)cli.bytes * 8.0 / secs : 0.0, (unsigned long long)cli.retries,
         (unsigned long long)cli.key_updates, resumption_counts());
  print_negotiated(stdout, &neg);
  fputs(",\"error\":", stdout);
  if (cli.error_kind) {
    fputs("{\"kind\":", stdout);
    json_str(stdout, cli.error_kind);
    fputs(",\"message\":", stdout);
    json_str(stdout, cli.error);
    fputs("}", stdout);
  } else fputs("null", stdout);
  printf("}\n");
  fflush(stdout);
}

static void add_names(char ***v, size_t *n, size_t *cap, char *list, const char *sep) {
  for (char *save = NULL, *t = strtok_r(list, sep, &save); t; t = strtok_r(NULL, sep, &save)) {
    while (*t == ' ' || *t == '\t' || *t == '\r') t++;
    size_t l = strlen(t);
    while (l > 0 && (t[l - 1] == ' ' || t[l - 1] == '\t' || t[l - 1] == '\r')) t[--l] = 0;
    if (!*t) continue;
    if (*n == *cap) {
      *cap = *cap ? *cap * 2 : 64;
      *v = realloc(*v, *cap * sizeof(**v));
      if (!*v) die("out of memory");
    }
    (*v)[(*n)++] = t;
  }
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, len = 0;
  char *b = malloc(cap);
  size_t r;
  while (b && (r = fread(b + len, 1, cap - len - 1, f)) > 0) {
    len += r;
    if (cap - len - 1 == 0) {
      char *nb = realloc(b, cap * 2);
      if (!nb) {
        free(b);
        b = NULL;
        break;
      }
      b = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (b) b[len] = 0;
  return b;
}

static int run_client(const char *connect_to, char *files, const char *files_from, long timeout) {
  struct sockaddr_storage ss;
  socklen_t sl;
  char **names = NULL;
  size_t n = 0, cap = 0;
  if (parse_addr(connect_to, &ss, &sl) != 0) die("bad --connect address %s", connect_to);
  if (files) add_names(&names, &n, &cap, files, ",");
  if (files_from) {
    char *text = slurp(files_from);
    if (!text) die("cannot read %s", files_from);
    add_names(&names, &n, &cap, text, "\n");
  }
  if (n == 0) die("no files to fetch; pass --files or --files-from");
  if (gnutls_certificate_allocate_credentials(&client_cred) < 0) die("gnutls credentials");
  ngtcp2_tstamp start = now_ns();
  ngtcp2_tstamp deadline = start + (ngtcp2_tstamp)(timeout < 1 ? 1 : timeout) * NGTCP2_SECONDS;
  if (prof.connection_per_file) {
    for (size_t i = 0; i < n; i++)
      if (client_connection(&ss, sl, names + i, 1, deadline) != 0) break;
  } else if (prof.resume && n > 1) {
    if (client_connection(&ss, sl, names, 1, deadline) == 0) {
      if (!ticket.have) client_error("resumption", "the server sent no session ticket");
      else client_connection(&ss, sl, names + 1, n - 1, deadline);
    }
  } else {
    client_connection(&ss, sl, names, n, deadline);
  }
  double secs = (double)(now_ns() - start) / 1e9;
  client_report(secs);
  return cli.error_kind ? EXIT_FAILURE_RUN : 0;
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
  fprintf(stderr,
          "usage: ngtcp2-peer hq server --testcase NAME --listen ADDR --root DIR [--state-dir DIR]\n"
          "       ngtcp2-peer hq client --testcase NAME --connect ADDR --download DIR --files a,b\n"
          "                             [--files-from LIST] [--timeout-secs S]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *testcase = "handshake", *listen_addr = "127.0.0.1:0", *root = NULL;
  const char *connect_to = NULL, *download = NULL, *files_from = NULL;
  char *files = NULL, *preferred = NULL;
  long timeout = 60;
  if (argc < 3 || strcmp(argv[1], "hq") != 0) usage();
  int server = strcmp(argv[2], "server") == 0;
  if (!server && strcmp(argv[2], "client") != 0) usage();
  for (int i = 3; i < argc; i++) {
    char *opt = argv[i], *val = strchr(opt, '=');
    if (val) *val++ = 0;
    else if (i + 1 < argc) val = argv[++i];
    else usage();
    if (strcmp(opt, "--testcase") == 0) testcase = val;
    else if (server && strcmp(opt, "--listen") == 0) listen_addr = val;
    else if (server && strcmp(opt, "--root") == 0) root = val;
    else if (server && strcmp(opt, "--state-dir") == 0) (void)val; /* accepted, unused */
    else if (server && strcmp(opt, "--preferred-address") == 0) preferred = val;
    else if (!server && strcmp(opt, "--connect") == 0) connect_to = val;
    else if (!server && strcmp(opt, "--download") == 0) download = val;
    else if (!server && strcmp(opt, "--files") == 0) files = val;
    else if (!server && strcmp(opt, "--files-from") == 0) files_from = val;
    else if (!server && strcmp(opt, "--timeout-secs") == 0) timeout = strtol(val, NULL, 10);
    else usage();
  }
  if (preferred) {
    printf("unsupported ngtcp2-peer's server does not offer a preferred address\n");
    fflush(stdout);
    return EXIT_UNSUPPORTED;
  }
  if (profile_for(testcase, &prof) != 0) {
    /* Test cases of the suite this peer does not play yet, and why. */
    static const char *why[][2] = {
        {"v2", "libngtcp2 0.12 predates the final QUIC v2 (RFC 9369) codepoint"},
        {"preferredaddress", "ngtcp2-peer neither offers nor follows a preferred address"},
    };
    for (size_t i = 0; i < sizeof(why) / sizeof(why[0]); i++)
      if (strcmp(testcase, why[i][0]) == 0) {
        printf("unsupported %s\n", why[i][1]);
        fflush(stdout);
        return EXIT_UNSUPPORTED;
      }
    printf("unsupported ngtcp2-peer does not know test case %s\n", testcase);
    fflush(stdout);
    return EXIT_UNSUPPORTED;
  }
  if (!server && prof.active_migration) {
    printf("unsupported ngtcp2-peer's client does not migrate to a new local port yet "
           "(one socket; libngtcp2 has ngtcp2_conn_initiate_migration)\n");
    fflush(stdout);
    return EXIT_UNSUPPORTED;
  }
  if (getenv("QUILL_NGTCP2_LOG")) {
    debug_log = fopen(getenv("QUILL_NGTCP2_LOG"), "a");
    if (debug_log) setvbuf(debug_log, NULL, _IOLBF, 0);
  }
  if (gnutls_global_init() < 0) die("gnutls_global_init failed");
  gnutls_rnd(GNUTLS_RND_KEY, static_secret, sizeof(static_secret));
  if (server) {
    if (!root) usage();
    srv.root = root;
    return run_server(listen_addr);
  }
  if (!connect_to || !download) usage();
  cli.download = download;
  return run_client(connect_to, files, files_from, timeout);
}
