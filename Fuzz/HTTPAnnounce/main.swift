import BitTorrent
import SeededRandom
import Trackers

/// libFuzzer entry: a hostile HTTP tracker's announce response body (BEP 3 dictionary
/// peers, BEP 23 compact `peers`, BEP 7 `peers6`, `failure reason`, `warning message`,
/// intervals of any size or sign) through `HTTPAnnounce.parseResponse`, then its outcome
/// through a `TorrentAnnouncer` with two BEP 12 tiers, as the tracker service reports
/// it. Short inputs also go, as text, through the IP address parser and, as an announce
/// URL from a torrent file, through the request and BEP 48 scrape URL builders.
///
/// Nothing may trap. A response that parses is within `AnnounceResponse`'s bounds,
/// its peers survive the compact and text round trips, text from the tracker is safe to
/// log, and the announcer always has a next announce within a day.
///
/// There is no magnet link parser to include: `MagnetLink.swift` only writes links.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPAnnounce(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let body = Array(UnsafeBufferPointer(start: data, count: size))
    let result = HTTPAnnounce.parseResponse(body)
    switch result {
    case .success(let response): FuzzHTTPAnnounce.check(response)
    case .failure(let error): FuzzHTTPAnnounce.check(error)
    }
    FuzzHTTPAnnounce.announce(result, seed: body.last ?? 0)
    FuzzHTTPAnnounce.text(body)
    return 0
}

enum FuzzHTTPAnnounce {
    static func check(_ response: AnnounceResponse) {
        precondition((AnnounceResponse.minimumInterval...AnnounceResponse.maximumInterval).contains(response.interval), "interval out of bounds")
        if let minInterval = response.minInterval { precondition((0...AnnounceResponse.maximumInterval).contains(minInterval)) }
        precondition(response.seeders.map { $0 >= 0 } ?? true && response.leechers.map { $0 >= 0 } ?? true)
        precondition(response.peers.count <= AnnounceResponse.maxPeers, "more peers than the cap")
        precondition(Set(response.peers).count == response.peers.count, "duplicate peers")
        for peer in response.peers {
            precondition(peer.port != 0 && !peer.ip.isUnspecified, "an unreachable peer")
            precondition(PeerAddress(compact: peer.compact) == peer, "compact round trip")
            precondition(PeerAddress.IP(peer.ip.description) == peer.ip, "address text round trip")
        }
        if let trackerID = response.trackerID { precondition((1...256).contains(trackerID.utf8.count)) }
        if let warning = response.warning { precondition(isSafe(warning, limit: 512), "unsafe warning text") }
    }

    static func check(_ error: TrackerError) {
        precondition(!error.description.isEmpty)
        switch error {
        case .failure(let reason):
            precondition(isSafe(reason, limit: 512), "unsafe failure reason")
        case .invalidResponse(.notBencode(_, let preview)):
            precondition(isSafe(preview, limit: 40), "unsafe preview")
        case .invalidResponse(.wrongType(let key, _, _)), .invalidResponse(.truncatedCompactPeers(let key, _, _)):
            precondition(key == "peers" || key == "peers6")
        case .invalidResponse, .httpStatus, .transport:
            break
        }
    }

    /// Tracker text goes into the log and the status page: no control characters (one
    /// tracker must not forge log lines), no trailing blanks, bounded length.
    static func isSafe(_ text: String, limit: Int) -> Bool {
        guard text.count <= limit + 1, text.last != " " else { return false }
        return text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F && !(0x80..<0xA0).contains($0.value) }
    }

    /// Every announce gets the same answer, succeeding or failing over, with the
    /// download completing midway and a shutdown at the end.
    static func announce(_ result: Result<AnnounceResponse, TrackerError>, seed: UInt8) {
        var rng = SplitMix64(seed: UInt64(seed))
        let tiers = [["http://a.example/announce"], ["http://b.example/announce", "http://c.example/announce"]]
        var announcer = TorrentAnnouncer(tiers: tiers, startedComplete: seed & 1 != 0, using: &rng)
        var now: UInt64 = 1_000_000
        var action = announcer.start(now: now)
        func report(_ url: String) -> TorrentAnnouncer.Action {
            switch result {
            case .success(let response): return announcer.announceSucceeded(url: url, response: response, now: now)
            case .failure(let error): return announcer.announceFailed(url: url, error: error, now: now, using: &rng)
            }
        }
        for step in 0..<12 {
            switch action {
            case .announce(let url, _):
                action = report(url)
                if case .wait(let until) = action {
                    // A tracker can slow us to once a day, no less often, and cannot
                    // make us announce in a loop.
                    precondition(until > now && until - now <= UInt64(AnnounceResponse.maximumInterval) * 1_000_000, "next announce out of bounds")
                }
            case .wait(let until):
                precondition(until >= now)
                now = until
                action = announcer.timerFired(now: now)
            case .none:
                preconditionFailure("the announcer stalled with trackers to announce to")
            }
            if step == 5 {
                let early = announcer.completed(now: now)
                if early != .none { action = early }
            }
        }
        if case .announce(let url, .stopped) = announcer.stop(now: now) {
            precondition(report(url) == .none)
        }
        precondition(announcer.trackers.count == 3)
    }

    static func text(_ bytes: [UInt8]) {
        guard bytes.count <= 2048 else { return }
        let text = String(decoding: bytes, as: UTF8.self)
        if let ip = PeerAddress.IP(text) {
            // Not every spelling is canonical, but the canonical one means the same.
            precondition(PeerAddress.IP(ip.description) == ip && PeerAddress.IP(bytes: ip.bytes) == ip, "address text round trip")
        }
        if let scrape = HTTPAnnounce.scrapeURL(announceURL: text) { precondition(scrape.contains("scrape")) }
        let request = AnnounceRequest(
            infoHash: InfoHash(bytes: [UInt8](repeating: 0xAB, count: 20))!, peerID: Array("-SE0100-abcdefghijkl".utf8), port: 6881,
            uploaded: -1, downloaded: Int64.max, left: Int64.min, event: .started, numWant: -1, key: 0xDEAD_BEEF,
            trackerID: text.isEmpty ? nil : text
        )
        let url = HTTPAnnounce.url(announceURL: text, request: request)
        precondition(url.contains("info_hash=%AB%AB") && !url.contains("#"), "the query landed in a fragment")
    }
}
