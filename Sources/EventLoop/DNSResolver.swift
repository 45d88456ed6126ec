import CLibevent
import Glibc

/// Why a name did not resolve.
public enum DNSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The name does not exist, or has no address of the asked family.
    case notFound(String)
    /// No answer within the lookup's timeout.
    case timedOut(String)
    /// Any other resolver failure, with libevent's words.
    case failed(String, reason: String)

    public var description: String {
        switch self {
        case .notFound(let host): return "\(host): no such host"
        case .timedOut(let host): return "\(host): DNS lookup timed out"
        case .failed(let host, let reason): return "\(host): DNS lookup failed: \(reason)"
        }
    }
}

/// Resolves host names to addresses without blocking the loop, through libevent's
/// asynchronous resolver (evdns), with a timeout per lookup. Loop thread only.
///
/// - Numeric addresses (`127.0.0.1`, `::1`) need no lookup: they complete on the next
///   loop turn (never inside `resolve`, so the caller's state is settled when the
///   completion runs). `numericAddress(_:port:)` answers them synchronously.
/// - RFC 6761 special names are answered here, without a query: `localhost` (and
///   `*.localhost`) is 127.0.0.1 and ::1, and `*.invalid` does not exist. So they
///   behave the same on every machine, whatever /etc/hosts says and whether or not a
///   name server is reachable.
/// - Other names go to the name servers of /etc/resolv.conf (or the one given), after
///   /etc/hosts. A lookup that has not completed after its timeout is cancelled and
///   completes with `.timedOut`: evdns's own retries (5 s, 3 attempts) could take far
///   longer than a tracker announce should wait.
/// - Every lookup completes exactly once, on the loop, unless `cancel()`ed first.
///   Addresses come back IPv4 first, without duplicates.
///
/// HTTPClient keeps its own evdns base for evhttp; this one is separate so lookups for
/// UDP trackers do not depend on the HTTP client's lifetime.
public final class DNSResolver {
    public enum Family: Sendable {
        case any, ipv4, ipv6
    }

    private unowned let loop: EventLoop
    private let dns: OpaquePointer
    private var active: [ObjectIdentifier: DNSLookup] = [:]

    /// Uses the system's resolver configuration (/etc/resolv.conf, /etc/hosts).
    public convenience init(loop: EventLoop) {
        // Without a usable resolv.conf, fall back to a base with no name servers: names
        // then fail (or come from the special cases) instead of the server not starting.
        guard let base = evdns_base_new(loop.base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE)
            ?? evdns_base_new(loop.base, 0) else { fatalError("evdns_base_new failed") }
        self.init(loop: loop, base: base)
    }

    /// Asks only `nameserver` (tests, or an operator's choice).
    public convenience init(loop: EventLoop, nameserver: SocketAddress) {
        guard let base = evdns_base_new(loop.base, EVDNS_BASE_DISABLE_WHEN_INACTIVE) else { fatalError("evdns_base_new failed") }
        _ = nameserver.withSockAddr { evdns_base_nameserver_sockaddr_add(base, $0, $1, 0) }
        self.init(loop: loop, base: base)
    }

    private init(loop: EventLoop, base: OpaquePointer) {
        self.loop = loop
        dns = base
    }

    deinit {
        for lookup in active.values { lookup.cancel() }
        // 1: fail requests still inside evdns; their callbacks find the lookups cancelled.
        evdns_base_free(dns, 1)
    }

    /// Lookups in flight.
    public var activeCount: Int { active.count }

    /// `host` as an IPv4 or IPv6 literal (brackets allowed), or nil for a name.
    public static func numericAddress(_ host: String, port: UInt16) -> SocketAddress? {
        var text = host
        if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        return SocketAddress(ip: text, port: port)
    }

    /// Starts resolving `host`; `completion` runs on the loop exactly once, unless the
    /// returned lookup is cancelled first. Every address carries `port`.
    @discardableResult
    public func resolve(
        _ host: String, port: UInt16 = 0, family: Family = .any, timeoutMicroseconds: Int64 = 10_000_000,
        completion: @escaping (Result<[SocketAddress], DNSError>) -> Void
    ) -> DNSLookup {
        let lookup = DNSLookup(resolver: self, host: host, port: port, completion: completion)
        active[ObjectIdentifier(lookup)] = lookup
        if let address = Self.numericAddress(host, port: port) {
            let wanted = family == .any || (family == .ipv4) == address.isIPv4
            lookup.finishSoon(wanted ? .success([address]) : .failure(.notFound(host)))
            return lookup
        }
        let name = host.lowercased().trimmingTrailingDot
        if name == "localhost" || name.hasSuffix(".localhost") {
            var addresses: [SocketAddress] = []
            if family != .ipv6 { addresses.append(SocketAddress(ip: [127, 0, 0, 1], port: port)!) }
            if family != .ipv4 { addresses.append(SocketAddress(ip: [UInt8](repeating: 0, count: 15) + [1], port: port)!) }
            lookup.finishSoon(.success(addresses))
            return lookup
        }
        if name.isEmpty || name == "invalid" || name.hasSuffix(".invalid") {
            lookup.finishSoon(.failure(.notFound(host)))
            return lookup
        }
        lookup.start(dns: dns, family: family, timeoutMicroseconds: timeoutMicroseconds)
        return lookup
    }

    func finished(_ lookup: DNSLookup) {
        active[ObjectIdentifier(lookup)] = nil
    }

    var eventLoop: EventLoop { loop }
}

/// One lookup in flight; `cancel()` abandons it.
public final class DNSLookup {
    private unowned let resolver: DNSResolver
    public let host: String
    private let port: UInt16
    private var completion: ((Result<[SocketAddress], DNSError>) -> Void)?
    /// The evdns request while it runs; libevent holds a retained reference to `self`
    /// as its context until its callback runs, which it always does (with
    /// EVUTIL_EAI_CANCEL after a cancel).
    private var request: OpaquePointer?
    private var timer: Timer?
    private var deliver: Timer?
    private var timedOut = false

    init(resolver: DNSResolver, host: String, port: UInt16, completion: @escaping (Result<[SocketAddress], DNSError>) -> Void) {
        self.resolver = resolver
        self.host = host
        self.port = port
        self.completion = completion
    }

    func start(dns: OpaquePointer, family: DNSResolver.Family, timeoutMicroseconds: Int64) {
        var hints = addrinfo()
        switch family {
        case .any: hints.ai_family = AF_UNSPEC
        case .ipv4: hints.ai_family = AF_INET
        case .ipv6: hints.ai_family = AF_INET6
        }
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        hints.ai_protocol = Int32(IPPROTO_UDP)
        let context = Unmanaged.passRetained(self).toOpaque()
        timer = Timer(loop: resolver.eventLoop, after: max(0, timeoutMicroseconds)) { [unowned self] in
            self.timer = nil
            self.timedOut = true
            if let request = self.request {
                self.request = nil
                evdns_getaddrinfo_cancel(request)
            }
            // Whether or not evdns calls back for the cancel, the lookup ends now.
            self.finishSoon(.failure(.timedOut(self.host)))
        }
        let pending = evdns_getaddrinfo(dns, host, nil, &hints, { result, addresses, context in
            let lookup = Unmanaged<DNSLookup>.fromOpaque(context!).takeRetainedValue()
            lookup.answered(result, addresses)
        }, context)
        // NULL: the callback already ran (an answer from /etc/hosts, or an immediate
        // failure), and `answered` released the context.
        request = pending
    }

    private func answered(_ result: Int32, _ list: UnsafeMutablePointer<addrinfo>?) {
        request = nil
        timer?.cancel()
        timer = nil
        defer { if let list { evutil_freeaddrinfo(list) } }
        guard completion != nil else { return }  // cancelled
        if timedOut { return finishSoon(.failure(.timedOut(host))) }
        switch result {
        case 0:
            var v4: [SocketAddress] = []
            var v6: [SocketAddress] = []
            var node = list
            while let current = node {
                if let address = current.pointee.ai_addr, let parsed = SocketAddress(address) {
                    let withPort = parsed.with(port: port)
                    if withPort.isIPv4 {
                        if !v4.contains(withPort) { v4.append(withPort) }
                    } else if !v6.contains(withPort) {
                        v6.append(withPort)
                    }
                }
                node = current.pointee.ai_next
            }
            let all = v4 + v6
            finishSoon(all.isEmpty ? .failure(.notFound(host)) : .success(all))
        case EVUTIL_EAI_NONAME, EVUTIL_EAI_NODATA, EVUTIL_EAI_ADDRFAMILY:
            finishSoon(.failure(.notFound(host)))
        case EVUTIL_EAI_CANCEL:
            finishSoon(.failure(.failed(host, reason: "cancelled")))
        default:
            finishSoon(.failure(.failed(host, reason: String(cString: evutil_gai_strerror(result)))))
        }
    }

    /// Delivers on a fresh loop turn: never inside `resolve` or an evdns callback.
    func finishSoon(_ result: Result<[SocketAddress], DNSError>) {
        guard deliver == nil, completion != nil else { return }
        deliver = Timer(loop: resolver.eventLoop, after: 0) { [unowned self] in
            self.deliver = nil
            let completion = self.completion
            self.completion = nil
            self.resolver.finished(self)  // may release the last reference to self
            completion?(result)
        }
    }

    /// Abandons the lookup: its completion never runs.
    public func cancel() {
        guard completion != nil else { return }  // delivered or cancelled already
        completion = nil
        timer?.cancel()
        timer = nil
        deliver?.cancel()
        deliver = nil
        if let request {
            self.request = nil
            evdns_getaddrinfo_cancel(request)
        }
        resolver.finished(self)
    }
}

extension String {
    /// `example.org.` names the same host as `example.org`.
    fileprivate var trimmingTrailingDot: String {
        hasSuffix(".") ? String(dropLast()) : self
    }
}
