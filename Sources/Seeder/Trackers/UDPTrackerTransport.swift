import EventLoop
import Glibc
import Trackers
import UDPTracker

/// Announces over UDP (BEP 15, BEP 41 URL data): one `UDPTrackerClient` per tracker
/// endpoint, shared by every torrent that announces there (one connection id for all),
/// host names resolved with evdns off the loop's critical path, datagrams through the
/// shared UDP port. Loop-owned.
final class UDPTrackerTransport {
    private final class Endpoint {
        var client: UDPTrackerClient
        var timer: Timer?
        var completions: [UDPTrackerClient.RequestID: (Result<AnnounceResponse, TrackerError>) -> Void] = [:]

        init(client: UDPTrackerClient) {
            self.client = client
        }
    }

    private unowned let loop: EventLoop
    private let port: UDPPort
    private let resolver: DNSResolver
    private var endpoints: [SocketAddress: Endpoint] = [:]
    /// Resolved names, kept for `dnsLifetime` so a thousand torrents on one tracker
    /// resolve it once.
    private var names: [String: (addresses: [SocketAddress], expires: UInt64)] = [:]
    private var nextID: UDPTrackerClient.RequestID = 0
    private var random = SystemRandomNumberGenerator()
    /// A reload applies to the trackers already contacted too, not only to new ones.
    var configuration: UDPTrackerClient.Configuration {
        didSet {
            for endpoint in endpoints.values { endpoint.client.configuration = configuration }
        }
    }

    /// What each tracker endpoint's client runs with, for tests.
    var endpointConfigurations: [UDPTrackerClient.Configuration] { endpoints.values.map(\.client.configuration) }

    static let dnsLifetime: UInt64 = 300_000_000

    init(loop: EventLoop, port: UDPPort, configuration: UDPTrackerClient.Configuration) {
        self.loop = loop
        self.port = port
        self.configuration = configuration
        resolver = DNSResolver(loop: loop)
    }

    /// Starts an announce; `completion` runs on a later loop turn unless the returned
    /// closure cancels it first.
    func announce(url: String, request: AnnounceRequest,
                  completion: @escaping (Result<AnnounceResponse, TrackerError>) -> Void) -> () -> Void {
        var cancelled = false
        var cancelInFlight: () -> Void = {}
        let guarded: (Result<AnnounceResponse, TrackerError>) -> Void = { result in
            if !cancelled { completion(result) }
        }
        guard let parsed = UDPTrackerURL(url) else {
            let failure = Timer(loop: loop, after: 0) { guarded(.failure(.transport("not a udp://HOST:PORT tracker URL"))) }
            return { cancelled = true; failure.cancel() }
        }
        let now = EventLoop.now()
        if let cached = names[parsed.host], cached.expires > now, let address = pick(cached.addresses) {
            // The cache holds the host's addresses; the port is this URL's.
            cancelInFlight = send(request, urlData: parsed.urlData, to: address.with(port: parsed.port), completion: guarded)
        } else {
            let lookup = resolver.resolve(parsed.host, port: parsed.port) { [unowned self] result in
                guard !cancelled else { return }
                switch result {
                case .success(let addresses):
                    self.names[parsed.host] = (addresses, EventLoop.now() + Self.dnsLifetime)
                    guard let address = self.pick(addresses) else {
                        return guarded(.failure(.transport("\(parsed.host) has no address of a family we listen on")))
                    }
                    cancelInFlight = self.send(request, urlData: parsed.urlData, to: address, completion: guarded)
                case .failure(let error):
                    guarded(.failure(.transport("cannot resolve \(parsed.host): \(error)")))
                }
            }
            cancelInFlight = { lookup.cancel() }
        }
        return {
            cancelled = true
            cancelInFlight()
        }
    }

    /// A datagram that looks like a tracker reply (byte 0 is 0).
    func receive(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress) {
        guard let endpoint = endpoints[source], let peer = Self.peerAddress(source) else { return }
        perform(endpoint.client.receive(datagram, from: peer, now: EventLoop.now()), for: endpoint, at: source)
    }

    /// The socket could not send to `destination` (unreachable): its requests fail now
    /// rather than after the whole retransmit schedule.
    func sendFailed(to destination: SocketAddress, errorCode: Int32) {
        guard let endpoint = endpoints[destination] else { return }
        let error = TrackerError.transport("cannot send to \(destination): \(String(cString: strerror(errorCode)))")
        perform(endpoint.client.transportFailed(error, now: EventLoop.now()), for: endpoint, at: destination)
    }

    // MARK: Internals

    /// IPv4 first: it is what most trackers and all of opentracker serve.
    private func pick(_ addresses: [SocketAddress]) -> SocketAddress? {
        addresses.first { $0.isIPv4 && port.hasIPv4 } ?? addresses.first { !$0.isIPv4 && port.hasIPv6 }
    }

    private func send(_ request: AnnounceRequest, urlData: String, to address: SocketAddress,
                      completion: @escaping (Result<AnnounceResponse, TrackerError>) -> Void) -> () -> Void {
        guard let peer = Self.peerAddress(address) else {
            completion(.failure(.transport("unusable tracker address \(address)")))
            return {}
        }
        let endpoint: Endpoint
        if let existing = endpoints[address] {
            endpoint = existing
        } else {
            endpoint = Endpoint(client: UDPTrackerClient(endpoint: peer, configuration: configuration))
            endpoints[address] = endpoint
        }
        nextID += 1
        let id = nextID
        endpoint.completions[id] = completion
        perform(endpoint.client.announce(id: id, request: request, urlData: Array(urlData.utf8), now: EventLoop.now(), using: &random),
                for: endpoint, at: address)
        return { [weak self, weak endpoint] in
            guard let self, let endpoint, endpoint.completions.removeValue(forKey: id) != nil else { return }
            self.perform(endpoint.client.cancel(id: id, now: EventLoop.now()), for: endpoint, at: address)
        }
    }

    private func perform(_ actions: [UDPTrackerClient.Action], for endpoint: Endpoint, at address: SocketAddress) {
        var sent = false
        for action in actions {
            switch action {
            case .send(let bytes):
                // A refused send (a full queue) is retried by the client's retransmit
                // schedule, like a lost datagram.
                sent = port.send(bytes, to: address) || sent
            case .announceSucceeded(let id, let response):
                endpoint.completions.removeValue(forKey: id)?(.success(response))
            case .announceFailed(let id, let error):
                endpoint.completions.removeValue(forKey: id)?(.failure(error))
            case .scrapeSucceeded, .scrapeFailed:
                break
            case .setTimer(let at):
                guard let at else {
                    endpoint.timer = nil
                    continue
                }
                let now = EventLoop.now()
                endpoint.timer = Timer(loop: loop, after: Int64(at > now ? at - now : 0)) { [unowned self, unowned endpoint] in
                    self.perform(endpoint.client.timerFired(now: EventLoop.now(), using: &self.random), for: endpoint, at: address)
                }
            }
        }
        if sent { port.flush() }
    }

    private static func peerAddress(_ address: SocketAddress) -> PeerAddress? {
        PeerAddress.IP(bytes: address.ip).map { PeerAddress(ip: $0, port: address.port) }
    }
}
