import CLibcrypto

/// SHA-1 through libcrypto, which uses the CPU's SHA extensions where present.
public enum SHA1 {
    public static let digestLength = 20

    public static func hash(_ buffer: UnsafeRawBufferPointer) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: digestLength)
        digest.withUnsafeMutableBufferPointer { out in
            seeder_sha1(buffer.baseAddress, buffer.count, out.baseAddress)
        }
        return digest
    }

    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBytes { hash($0) }
    }

    /// Frees the calling thread's libcrypto state. A thread that hashed calls this
    /// before it ends: left to the thread-exit destructor, that cleanup can run while
    /// the process's exit handlers tear libcrypto down (a crash seen about once in 500
    /// runs of `seeder create`, in OpenSSL's thread-stop code).
    public static func releaseThreadState() {
        seeder_crypto_thread_stop()
    }

    /// Hashes into caller-owned storage, so hot loops allocate nothing.
    public static func hash(_ buffer: UnsafeRawBufferPointer, into digest: UnsafeMutablePointer<UInt8>) {
        seeder_sha1(buffer.baseAddress, buffer.count, digest)
    }
}

/// Incremental SHA-1, for hashing a piece in cache-sized chunks as it is read. One per
/// thread: it is not safe to share.
public final class SHA1Context {
    private let context: OpaquePointer

    public init() {
        guard let context = seeder_sha1_new() else { fatalError("libcrypto could not create a SHA-1 context") }
        self.context = context
    }

    deinit { seeder_sha1_free(context) }

    public func reset() {
        seeder_sha1_reset(context)
    }

    public func update(_ buffer: UnsafeRawBufferPointer) {
        seeder_sha1_update(context, buffer.baseAddress, buffer.count)
    }

    /// The digest of everything since the last reset; resets for the next one.
    public func finish() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: SHA1.digestLength)
        digest.withUnsafeMutableBufferPointer { _ = seeder_sha1_final(context, $0.baseAddress) }
        seeder_sha1_reset(context)
        return digest
    }
}
