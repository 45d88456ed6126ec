import BitTorrent
import EventLoop
import Logging
import Testing
import Trackers
import UDPTracker
@testable import Seeder

@Suite struct UDPTrackerTransportTests {
    /// SIGHUP's `udp_retries` reaches the trackers already contacted, not only new ones.
    @Test func reloadedRetriesReachTrackersAlreadyContacted() throws {
        let loop = EventLoop()
        let port = try UDPPort(loop: loop, addresses: [SocketAddress(ip: "127.0.0.1", port: 0)!], logger: Logger(label: "test"))
        let transport = UDPTrackerTransport(loop: loop, port: port, configuration: .init(maxRetries: 8))
        let request = AnnounceRequest(
            infoHash: InfoHash(bytes: [UInt8](repeating: 7, count: 20))!, peerID: Array("-SD0001-abcdefghijkl".utf8), port: 6881,
            uploaded: 0, downloaded: 0, left: 0, event: .started, numWant: 50, key: 1)
        // Port 9 (discard): nothing answers; the endpoint exists once the address resolves.
        let cancel = transport.announce(url: "udp://127.0.0.1:9/announce", request: request) { _ in }
        var timer: Timer? = Timer(loop: loop, after: 100_000) { loop.stop() }
        loop.run()
        timer = nil
        _ = timer
        #expect(transport.endpointConfigurations.map(\.maxRetries) == [8])

        transport.configuration.maxRetries = 0
        #expect(transport.endpointConfigurations.map(\.maxRetries) == [0])
        cancel()
        port.close()
    }
}
