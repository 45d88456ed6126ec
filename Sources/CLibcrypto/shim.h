#ifndef SEEDER_CLIBCRYPTO_SHIM_H
#define SEEDER_CLIBCRYPTO_SHIM_H
#include <stddef.h>
#include <openssl/sha.h>

// One-shot SHA-1; OpenSSL dispatches to SHA-NI where the CPU has it.
static inline void seeder_sha1(const void *data, size_t length, unsigned char *out) {
    SHA1((const unsigned char *)data, length, out);
}
#endif
