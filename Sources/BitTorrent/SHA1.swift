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

    /// Hashes into caller-owned storage, so hot loops allocate nothing.
    public static func hash(_ buffer: UnsafeRawBufferPointer, into digest: UnsafeMutablePointer<UInt8>) {
        seeder_sha1(buffer.baseAddress, buffer.count, digest)
    }
}
