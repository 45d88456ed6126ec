/// A byte FIFO on a circular buffer that grows on demand up to a fixed limit, so idle
/// connections stay small and busy ones never reallocate per packet.
struct ByteRing {
    private var storage: [UInt8] = []
    fileprivate var head = 0
    fileprivate(set) var count = 0
    let limit: Int

    init(limit: Int) { self.limit = max(limit, 1) }

    var freeSpace: Int { limit - count }
    var isEmpty: Bool { count == 0 }

    private mutating func reserve(_ needed: Int) {
        guard needed > storage.count else { return }
        var capacity = max(storage.count, 4096)
        while capacity < needed { capacity *= 2 }
        capacity = min(capacity, limit)
        var grown = [UInt8](repeating: 0, count: capacity)
        if count > 0 {
            grown.withUnsafeMutableBytes { dst in
                copyOut(from: 0, count: count, to: dst.baseAddress!)
            }
        }
        storage = grown
        head = 0
    }

    /// Appends as much of `bytes` as fits; returns how many bytes were taken.
    @discardableResult
    mutating func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, freeSpace)
        guard n > 0, let src = bytes.baseAddress else { return 0 }
        reserve(count + n)
        let capacity = storage.count
        var tail = head + count
        if tail >= capacity { tail -= capacity }
        let first = min(n, capacity - tail)
        storage.withUnsafeMutableBytes { dst in
            (dst.baseAddress! + tail).copyMemory(from: src, byteCount: first)
            if n > first {
                dst.baseAddress!.copyMemory(from: src + first, byteCount: n - first)
            }
        }
        count += n
        return n
    }

    /// Copies `n` bytes starting `offset` bytes past the head to `dst`.
    func copyOut(from offset: Int, count n: Int, to dst: UnsafeMutableRawPointer) {
        precondition(offset >= 0 && n >= 0 && offset + n <= count)
        guard n > 0 else { return }
        let capacity = storage.count
        var start = head + offset
        if start >= capacity { start -= capacity }
        let first = min(n, capacity - start)
        storage.withUnsafeBytes { src in
            dst.copyMemory(from: src.baseAddress! + start, byteCount: first)
            if n > first {
                (dst + first).copyMemory(from: src.baseAddress!, byteCount: n - first)
            }
        }
    }

    /// Appends `n` bytes from `offset` past the head to `out` without consuming them.
    func append(from offset: Int, count n: Int, to out: inout [UInt8]) {
        precondition(offset >= 0 && n >= 0 && offset + n <= count)
        guard n > 0 else { return }
        let capacity = storage.count
        var start = head + offset
        if start >= capacity { start -= capacity }
        let first = min(n, capacity - start)
        storage.withUnsafeBufferPointer { src in
            // Contiguous sources take Array's memcpy path.
            out.append(contentsOf: UnsafeBufferPointer(rebasing: src[start ..< start + first]))
            if n > first {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: src[0 ..< n - first]))
            }
        }
    }

    mutating func discard(_ n: Int) {
        let n = min(n, count)
        guard n > 0 else { return }
        head += n
        if head >= storage.count { head -= storage.count }
        count -= n
        if count == 0 { head = 0 }
    }

    /// Moves up to `max` bytes to the end of `out`.
    mutating func read(max: Int, into out: inout [UInt8]) -> Int {
        let n = min(max, count)
        append(from: 0, count: n, to: &out)
        discard(n)
        return n
    }
}

extension ByteRing {
    /// Drops the newest `n` bytes.
    mutating func removeLast(_ n: Int) {
        count -= min(n, count)
        if count == 0 { head = 0 }
    }
}
