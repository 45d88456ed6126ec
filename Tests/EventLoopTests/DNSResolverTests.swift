import Testing
@testable import EventLoop

/// A name server on loopback built from a UDPSocket: it answers A queries for
/// `tracker.test` with 10.1.2.3, AAAA queries with no records, and everything else
/// with NXDOMAIN, or answers nothing at all when `silent`.
final class FakeNameServer: UDPSocketDelegate {
    let socket: UDPSocket
    var silent = false
    var queries = 0

    init(loop: EventLoop) throws {
        socket = try UDPSocket(loop: loop, address: SocketAddress(ip: "127.0.0.1", port: 0)!)
        socket.delegate = self
    }

    func udpSocket(_ socket: UDPSocket, received bytes: UnsafeRawBufferPointer, from source: SocketAddress) {
        queries += 1
        guard !silent, bytes.count > 12 else { return }
        let query = Array(bytes)
        // The question: labels up to a zero byte, then type and class.
        var index = 12
        var labels: [String] = []
        while index < query.count, query[index] != 0 {
            let length = Int(query[index])
            guard index + 1 + length <= query.count else { return }
            labels.append(String(decoding: query[(index + 1)..<(index + 1 + length)], as: UTF8.self))
            index += 1 + length
        }
        guard index + 5 <= query.count else { return }
        let questionEnd = index + 5
        let type = UInt16(query[index + 1]) << 8 | UInt16(query[index + 2])
        // evdns randomizes the case of the name it asks (0x20 hack) and checks the
        // answer repeats it: copy the question as it came.
        let known = labels.joined(separator: ".").lowercased() == "tracker.test"
        let answer = known && type == 1
        var reply = Array(query[0..<2])
        reply += [0x81, known ? 0x80 : 0x83]  // response, recursion available, NOERROR / NXDOMAIN
        reply += [0, 1, 0, answer ? 1 : 0, 0, 0, 0, 0]
        reply += query[12..<questionEnd]
        if answer { reply += [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3] }
        socket.send(reply, to: source)
        socket.flush()
    }

    func udpSocketDrained(_ socket: UDPSocket) {}
}

@Suite struct DNSResolverTests {
    /// Resolves `host` and runs the loop until the completion, at most `limit` µs.
    func resolve(
        _ resolver: DNSResolver, _ loop: EventLoop, _ host: String, family: DNSResolver.Family = .any,
        timeout: Int64 = 2_000_000, limit: Int64 = 5_000_000
    ) -> Result<[SocketAddress], DNSError>? {
        var result: Result<[SocketAddress], DNSError>?
        resolver.resolve(host, port: 6969, family: family, timeoutMicroseconds: timeout) {
            result = $0
            loop.stop()
        }
        #expect(result == nil)  // never inside resolve
        _ = runLoop(loop, limit: limit)
        return result
    }

    @Test func numericAddressesResolveWithoutALookup() throws {
        let loop = EventLoop()
        let resolver = DNSResolver(loop: loop)
        #expect(try resolve(resolver, loop, "127.0.0.1")?.get() == [SocketAddress(ip: "127.0.0.1", port: 6969)!])
        #expect(try resolve(resolver, loop, "[::1]")?.get() == [SocketAddress(ip: "::1", port: 6969)!])
        #expect(resolve(resolver, loop, "127.0.0.1", family: .ipv6) == .failure(.notFound("127.0.0.1")))
        #expect(DNSResolver.numericAddress("10.0.0.1", port: 1) == SocketAddress(ip: "10.0.0.1", port: 1))
        #expect(DNSResolver.numericAddress("tracker.example", port: 1) == nil)
        #expect(resolver.activeCount == 0)
    }

    @Test func localhostIsLoopback() throws {
        let loop = EventLoop()
        let resolver = DNSResolver(loop: loop)
        let both = [SocketAddress(ip: "127.0.0.1", port: 6969)!, SocketAddress(ip: "::1", port: 6969)!]
        #expect(try resolve(resolver, loop, "localhost")?.get() == both)
        #expect(try resolve(resolver, loop, "LOCALHOST.")?.get() == both)
        #expect(try resolve(resolver, loop, "localhost", family: .ipv4)?.get() == [both[0]])
    }

    @Test func invalidNamesFailAtOnce() {
        let loop = EventLoop()
        let resolver = DNSResolver(loop: loop)
        let start = EventLoop.now()
        #expect(resolve(resolver, loop, "no-such-tracker.invalid") == .failure(.notFound("no-such-tracker.invalid")))
        #expect(resolve(resolver, loop, "") == .failure(.notFound("")))
        #expect(EventLoop.now() - start < 1_000_000)
    }

    @Test func namesGoToTheNameServer() throws {
        let loop = EventLoop()
        let server = try FakeNameServer(loop: loop)
        let resolver = DNSResolver(loop: loop, nameserver: server.socket.localAddress)
        #expect(try resolve(resolver, loop, "tracker.test")?.get() == [SocketAddress(ip: "10.1.2.3", port: 6969)!])
        #expect(server.queries >= 1)
        #expect(resolve(resolver, loop, "unknown.test") == .failure(.notFound("unknown.test")))
        #expect(resolver.activeCount == 0)
    }

    @Test func anUnansweredLookupTimesOut() throws {
        let loop = EventLoop()
        let server = try FakeNameServer(loop: loop)
        server.silent = true
        let resolver = DNSResolver(loop: loop, nameserver: server.socket.localAddress)
        let start = EventLoop.now()
        #expect(resolve(resolver, loop, "tracker.test", timeout: 300_000) == .failure(.timedOut("tracker.test")))
        let elapsed = EventLoop.now() - start
        #expect(elapsed >= 300_000 && elapsed < 2_000_000)
        #expect(server.queries >= 1)
        #expect(resolver.activeCount == 0)
    }

    @Test func aCancelledLookupNeverCompletes() throws {
        let loop = EventLoop()
        let server = try FakeNameServer(loop: loop)
        server.silent = true
        let resolver = DNSResolver(loop: loop, nameserver: server.socket.localAddress)
        var called = false
        let lookup = resolver.resolve("tracker.test", timeoutMicroseconds: 100_000) { _ in called = true }
        let numeric = resolver.resolve("127.0.0.1") { _ in called = true }
        #expect(resolver.activeCount == 2)
        lookup.cancel()
        numeric.cancel()
        lookup.cancel()  // twice is harmless
        #expect(resolver.activeCount == 0)
        let stopper = Timer(loop: loop, after: 400_000) { loop.stop() }
        _ = runLoop(loop, limit: 2_000_000)
        stopper.cancel()
        #expect(!called)
    }
}
