#ifndef SEEDER_CLIBEVENT_SHIM_H
#define SEEDER_CLIBEVENT_SHIM_H

// System headers first: libevent's event-config.h defines _GNU_SOURCE, and a system
// header parsed after that no longer matches Swift's Glibc module (fd_set clashes).
#include <sys/types.h>
#include <sys/time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdarg.h>
#include <time.h>
#include <pthread.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <event2/http.h>
#include <event2/dns.h>
#include <event2/thread.h>
#include <event2/util.h>

// Function-like macros do not import into Swift; these wrap them.
static inline struct event *seeder_evtimer_new(struct event_base *base, event_callback_fn cb, void *arg) {
    return event_new(base, -1, 0, cb, arg);
}
static inline struct event *seeder_evsignal_new(struct event_base *base, int signum, event_callback_fn cb, void *arg) {
    return event_new(base, signum, EV_SIGNAL | EV_PERSIST, cb, arg);
}
static inline int seeder_evtimer_add(struct event *ev, long long usec) {
    struct timeval tv;
    tv.tv_sec = (time_t)(usec / 1000000);
    tv.tv_usec = (suseconds_t)(usec % 1000000);
    return event_add(ev, &tv);
}
static inline int seeder_evtimer_pending(struct event *ev) {
    return event_pending(ev, EV_TIMEOUT, NULL);
}

static inline long seeder_ssl_set_sni(SSL *ssl, const char *host) {
    return SSL_set_tlsext_host_name(ssl, host);
}

// Socket options through one call each, so Swift need not spell socklen_t casts.
static inline int seeder_set_int_option(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof(value));
}

// recvmmsg/sendmmsg and struct mmsghdr are declared only under _GNU_SOURCE, which the
// system headers above are parsed without (see the top of this file), so they do not
// import. The same layout under our own name, and the system calls themselves.
struct seeder_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
static inline int seeder_recvmmsg(int fd, struct seeder_mmsghdr *messages, unsigned int count, int flags) {
    return (int)syscall(SYS_recvmmsg, fd, messages, count, flags, NULL);
}
static inline int seeder_sendmmsg(int fd, struct seeder_mmsghdr *messages, unsigned int count, int flags) {
    return (int)syscall(SYS_sendmmsg, fd, messages, count, flags);
}
static inline int seeder_get_int_option(int fd, int level, int name) {
    int value = -1;
    socklen_t length = sizeof(value);
    if (getsockopt(fd, level, name, &value, &length) != 0) return -1;
    return value;
}
#endif
