#ifndef SEEDER_CLIBCRYPTO_SHIM_H
#define SEEDER_CLIBCRYPTO_SHIM_H
#include <stddef.h>
#include <openssl/sha.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

// One-shot SHA-1; OpenSSL dispatches to SHA-NI where the CPU has it.
static inline void seeder_sha1(const void *data, size_t length, unsigned char *out) {
    SHA1((const unsigned char *)data, length, out);
}

// Incremental SHA-1 through EVP (the SHA1_Init family is deprecated in OpenSSL 3).
static inline EVP_MD_CTX *seeder_sha1_new(void) {
    EVP_MD_CTX *context = EVP_MD_CTX_new();
    if (context != NULL && EVP_DigestInit_ex(context, EVP_sha1(), NULL) != 1) {
        EVP_MD_CTX_free(context);
        return NULL;
    }
    return context;
}
static inline int seeder_sha1_reset(EVP_MD_CTX *context) {
    return EVP_DigestInit_ex(context, NULL, NULL);
}
static inline int seeder_sha1_update(EVP_MD_CTX *context, const void *data, size_t length) {
    return EVP_DigestUpdate(context, data, length);
}
static inline int seeder_sha1_final(EVP_MD_CTX *context, unsigned char *out) {
    unsigned int length = 0;
    return EVP_DigestFinal_ex(context, out, &length);
}
static inline void seeder_sha1_free(EVP_MD_CTX *context) {
    EVP_MD_CTX_free(context);
}
// Frees this thread's libcrypto state now, rather than in its thread-exit destructor,
// which can race the process's atexit cleanup.
static inline void seeder_crypto_thread_stop(void) {
    OPENSSL_thread_stop();
}
#endif
