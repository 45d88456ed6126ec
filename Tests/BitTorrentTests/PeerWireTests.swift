import Testing
@testable import BitTorrent
import SeededRandom

@Suite struct PeerMessageCodecTests {
    @Test func roundTripsEveryMessage() throws {
        let block = BlockRequest(piece: 7, offset: 16384, length: 16384)
        let messages: [PeerMessage] = [
            .keepAlive, .choke, .unchoke, .interested, .notInterested, .have(piece: 123456), .bitfield([0xFF, 0x80]),
            .request(block), .piece(piece: 3, offset: 0, data: [1, 2, 3]), .cancel(block), .port(6881),
            .suggestPiece(piece: 5), .haveAll, .haveNone, .rejectRequest(block), .allowedFast(piece: 9),
            .extended(id: 0, payload: Array("de".utf8)),
        ]
        var decoder = PeerMessageDecoder(maxMessageLength: 1 << 16)
        var stream: [UInt8] = []
        for message in messages { message.encode(into: &stream) }
        // Byte by byte: framing must not depend on how the stream is cut.
        var decoded: [PeerMessage] = []
        for byte in stream {
            decoder.append([byte])
            while let message = try decoder.next() { decoded.append(message) }
        }
        #expect(decoded == messages)
    }

    @Test func encodesTheExactWireBytes() {
        #expect(PeerMessage.request(BlockRequest(piece: 1, offset: 2, length: 3)).encoded()
            == [0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3])
        #expect(PeerMessage.haveAll.encoded() == [0, 0, 0, 1, 14])
        #expect(PeerMessage.keepAlive.encoded() == [0, 0, 0, 0])
    }

    @Test func writesThePieceHeaderInPlaceAsTheEncoderDoes() {
        var expected: [UInt8] = []
        PeerMessage.appendPieceHeader(piece: 0x0102_0304, offset: 0x4000, length: 16384, into: &expected)
        var written = [UInt8](repeating: 0xEE, count: PeerMessage.pieceHeaderLength + 1)
        written.withUnsafeMutableBytes {
            PeerMessage.writePieceHeader(piece: 0x0102_0304, offset: 0x4000, length: 16384, to: $0)
        }
        #expect(Array(written.prefix(PeerMessage.pieceHeaderLength)) == expected)
        #expect(written.last == 0xEE)
        #expect(expected == [0, 0, 0x40, 0x09, 7, 1, 2, 3, 4, 0, 0, 0x40, 0])
    }

    @Test func refusesAHugeLengthBeforeBufferingIt() {
        var decoder = PeerMessageDecoder(maxMessageLength: PeerMessageDecoder.limit(pieceCount: 100))
        decoder.append([0xFF, 0xFF, 0xFF, 0xFF, 7])
        #expect(throws: PeerProtocolError.messageTooLong(length: 0xFFFF_FFFF, limit: 1 << 20)) { try decoder.next() }
    }

    @Test func refusesWrongFixedLengths() {
        var decoder = PeerMessageDecoder(maxMessageLength: 1 << 16)
        decoder.append([0, 0, 0, 3, 6, 0, 0])  // a request of 2 bytes
        #expect(throws: PeerProtocolError.malformed(id: 6, length: 3)) { try decoder.next() }
    }

    @Test func fillReadsInPlaceAcrossCompactions() throws {
        // Blocks cut at every size up to a read's capacity: buffered bytes are moved to
        // the front and the buffer grown as reads come, and no byte is lost or repeated.
        var stream: [UInt8] = []
        var expected: [PeerMessage] = []
        for index in 0..<64 {
            var random = SplitMix64(seed: UInt64(index))
            let message = PeerMessage.piece(piece: index, offset: 0, data: (0..<16384).map { _ in UInt8.random(in: 0...255, using: &random) })
            message.encode(into: &stream)
            expected.append(message)
            PeerMessage.have(piece: index).encode(into: &stream)
            expected.append(.have(piece: index))
        }
        var decoder = PeerMessageDecoder(maxMessageLength: 1 << 16)
        var decoded: [PeerMessage] = []
        var position = 0
        var cut = 1
        while position < stream.count {
            let capacity = 20_000
            let wanted = min(cut, capacity, stream.count - position)
            let added = decoder.fill(capacity: capacity) { space in
                #expect(space.count == capacity)
                stream[position..<(position + wanted)].withUnsafeBytes { space.copyMemory(from: $0) }
                return wanted
            }
            #expect(added == wanted)
            position += wanted
            cut = cut * 7 % 19_997 + 1
            while let message = try decoder.next() { decoded.append(message) }
        }
        #expect(decoded == expected)
        #expect(decoder.bufferedByteCount == 0)
        // A read that found nothing adds nothing; and once empty, a decoder whose reads
        // got small gives back its large storage.
        #expect(decoder.fill(capacity: 256 << 10) { _ in 0 } == 0)
        #expect(decoder.storageByteCount >= 256 << 10)
        #expect(decoder.fill(capacity: 100) { _ in 0 } == 0)
        #expect(decoder.bufferedByteCount == 0)
        #expect(decoder.storageByteCount < 1024)
    }

    @Test func skipsUnknownMessages() throws {
        var decoder = PeerMessageDecoder(maxMessageLength: 1 << 16)
        decoder.append([0, 0, 0, 3, 99, 1, 2] + PeerMessage.interested.encoded())
        #expect(try decoder.next() == .unknown(id: 99, length: 3))
        #expect(try decoder.next() == .interested)
    }

    @Test func parsesHandshakes() throws {
        let hash = InfoHash(bytes: [UInt8](repeating: 0xAB, count: 20))!
        let handshake = Handshake(reserved: Handshake.ourReserved, infoHash: hash, peerID: [UInt8](repeating: 0x31, count: 20))
        let bytes = handshake.encoded()
        #expect(bytes.count == 68)
        let parsed = try Handshake.parsePrefix(bytes)
        #expect(parsed.infoHash == hash)
        #expect(handshake.supportsFast && handshake.supportsExtensions)
        #expect(throws: PeerProtocolError.self) { try Handshake.parsePrefix(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n....................".utf8)) }
    }

    @Test func refusesAHandshakeAtItsFirstWrongByte() throws {
        let start = Handshake(reserved: Handshake.ourReserved, infoHash: InfoHash(bytes: [UInt8](repeating: 1, count: 20))!,
                              peerID: [UInt8](repeating: 0x31, count: 20)).encoded()
        // Every true beginning passes, however short, and so does nothing at all.
        for length in 0 ... 20 { try Handshake.checkStart(start.prefix(length)) }
        #expect(throws: PeerProtocolError.self) { try Handshake.checkStart([0x13, 0x42, 0x69, 0x74, 0x00]) }
        #expect(throws: PeerProtocolError.self) { try Handshake.checkStart([0x47]) }
        // The decoder lends what it holds without taking it.
        var decoder = PeerMessageDecoder(maxMessageLength: 1 << 20)
        #expect(decoder.peekRaw(20).isEmpty)
        decoder.append(Array(start[0 ..< 7]))
        #expect(Array(decoder.peekRaw(20)) == Array(start[0 ..< 7]))
        #expect(decoder.bufferedByteCount == 7)
    }

    @Test func extensionHandshakeRoundTrips() throws {
        var handshake = ExtensionHandshake()
        handshake.clientVersion = "Seeder 0.1.0"
        handshake.requestQueueLength = 500
        handshake.uploadOnly = true
        handshake.yourIP = [127, 0, 0, 1]
        handshake.listenPort = 6881
        let parsed = try ExtensionHandshake(payload: handshake.encoded())
        #expect(parsed == handshake)
        #expect(throws: BencodeError.self) { try ExtensionHandshake(payload: Array("d1:m".utf8)) }
    }
}

@Suite struct PeerSessionTests {
    static let fast: [UInt8] = [0, 0, 0, 0, 0, 0x10, 0, 0x04]
    static let plain: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0]

    /// 10 pieces of 32 KiB, the last 20000 bytes.
    func torrent(complete: Bool = true) -> TorrentView {
        var have = Bitfield(count: 10)
        if complete { have.setAll() } else { have[0] = true }
        return TorrentView(pieceCount: 10, pieceLength: 32768, totalLength: 9 * 32768 + 20000, have: have)
    }

    func session(_ reserved: [UInt8] = fast) -> PeerSession {
        PeerSession(configuration: .init(), peerReserved: reserved, now: 0)
    }

    @Test func opensWithExtensionHandshakeThenExactlyOneHaveMessage() {
        var fastPeer = session()
        let out = fastPeer.start(torrent: torrent(), yourIP: [127, 0, 0, 1], now: 0)
        #expect(out.count == 2)
        guard case .send(.extended(0, let payload)) = out[0] else { Issue.record("no extension handshake first"); return }
        let handshake = try? ExtensionHandshake(payload: payload)
        #expect(handshake?.uploadOnly == true && handshake?.requestQueueLength == 500 && handshake?.messages.isEmpty == true)
        #expect(out[1] == .send(.haveAll))

        var plainPeer = session(Self.plain)
        #expect(plainPeer.start(torrent: torrent(complete: false), yourIP: nil, now: 0) == [.send(.bitfield([0x80, 0x00]))])
    }

    @Test func servesRequestsOnlyWhenUnchoked() {
        var peer = session()
        let view = torrent()
        let block = BlockRequest(piece: 2, offset: 16384, length: 16384)
        #expect(peer.receive(.interested, torrent: view, now: 1) == [])
        #expect(peer.receive(.request(block), torrent: view, now: 1) == [.send(.rejectRequest(block))])
        #expect(peer.setChoking(false, now: 2) == [.send(.unchoke)])
        #expect(peer.receive(.request(block), torrent: view, now: 3) == [])
        #expect(peer.nextRequest() == block)
        #expect(peer.nextRequest() == nil)
        #expect(peer.blockRead(block, now: 4) == .send)
    }

    @Test(arguments: [
        BlockRequest(piece: 10, offset: 0, length: 16384),  // no such piece
        BlockRequest(piece: 0, offset: 0, length: 1 << 20),  // 1 MiB
        BlockRequest(piece: 0, offset: 0, length: 0),
        BlockRequest(piece: 0, offset: 32768 - 100, length: 16384),  // past the piece
        BlockRequest(piece: 9, offset: 16384, length: 16384),  // past the short last piece
    ])
    func rejectsAndDisconnectsInvalidRequests(block: BlockRequest) {
        var peer = session()
        _ = peer.setChoking(false, now: 0)
        let out = peer.receive(.request(block), torrent: torrent(), now: 1)
        #expect(out.first == .send(.rejectRequest(block)))
        guard case .close(.invalidRequest)? = out.last else { Issue.record("not closed: \(out)"); return }
        #expect(peer.isClosed)
    }

    @Test func disconnectsARequestForAPieceNotHeld() {
        var peer = session(Self.plain)
        _ = peer.setChoking(false, now: 0)
        let out = peer.receive(.request(BlockRequest(piece: 5, offset: 0, length: 16384)), torrent: torrent(complete: false), now: 1)
        guard case .close(.invalidRequest)? = out.last else { Issue.record("not closed: \(out)"); return }
        #expect(out.count == 1)  // no reject without the fast extension
    }

    @Test func everyRequestGetsOnePieceOrOneReject() {
        var peer = session()
        let view = torrent()
        _ = peer.setChoking(false, now: 0)
        let blocks = (0..<4).map { BlockRequest(piece: $0, offset: 0, length: 16384) }
        for block in blocks { _ = peer.receive(.request(block), torrent: view, now: 1) }
        let reading = peer.nextRequest()!
        // Cancel one queued and the one being read: each gets its reject now...
        #expect(peer.receive(.cancel(blocks[1]), torrent: view, now: 2) == [.send(.rejectRequest(blocks[1]))])
        #expect(peer.receive(.cancel(reading), torrent: view, now: 2) == [.send(.rejectRequest(reading))])
        // ...and the read that finishes later is dropped, not sent.
        #expect(peer.blockRead(reading, now: 3) == .drop)
        // Choking rejects everything still pending.
        let out = peer.setChoking(true, now: 4)
        #expect(out == [.send(.choke), .send(.rejectRequest(blocks[2])), .send(.rejectRequest(blocks[3]))])
        #expect(peer.nextRequest() == nil)
    }

    @Test func cancelsMatchQueuedCopiesOneForOne() {
        var peer = session()
        let view = torrent()
        _ = peer.setChoking(false, now: 0)
        let twice = BlockRequest(piece: 1, offset: 0, length: 16384)
        let other = BlockRequest(piece: 2, offset: 0, length: 16384)
        for block in [twice, other, twice] { _ = peer.receive(.request(block), torrent: view, now: 1) }
        // Never requested, or already taken for reading: nothing to cancel in the queue.
        #expect(peer.receive(.cancel(BlockRequest(piece: 3, offset: 0, length: 16384)), torrent: view, now: 2) == [])
        // A block requested twice takes two cancels; a third finds nothing.
        #expect(peer.receive(.cancel(twice), torrent: view, now: 2) == [.send(.rejectRequest(twice))])
        #expect(peer.receive(.cancel(twice), torrent: view, now: 2) == [.send(.rejectRequest(twice))])
        #expect(peer.receive(.cancel(twice), torrent: view, now: 2) == [])
        #expect(peer.nextRequest() == other)
        #expect(peer.receive(.cancel(other), torrent: view, now: 3) == [.send(.rejectRequest(other))])
        #expect(peer.receive(.cancel(other), torrent: view, now: 3) == [])
        #expect(peer.nextRequest() == nil)
        // Choking empties the queue, so later cancels find nothing there either.
        _ = peer.receive(.request(twice), torrent: view, now: 4)
        _ = peer.setChoking(true, now: 5)
        _ = peer.setChoking(false, now: 6)
        #expect(peer.receive(.cancel(twice), torrent: view, now: 7) == [])
    }

    @Test func rejectsRequestsBeyondTheQueueAndCutsFloods() {
        var configuration = PeerSession.Configuration()
        configuration.requestQueueLength = 2
        var peer = PeerSession(configuration: configuration, peerReserved: Self.fast, now: 0)
        let view = torrent()
        _ = peer.setChoking(false, now: 0)
        let blocks = (0..<5).map { BlockRequest(piece: $0, offset: 0, length: 16384) }
        #expect(peer.receive(.request(blocks[0]), torrent: view, now: 1) == [])
        #expect(peer.receive(.request(blocks[1]), torrent: view, now: 1) == [])
        #expect(peer.receive(.request(blocks[2]), torrent: view, now: 1) == [.send(.rejectRequest(blocks[2]))])
        #expect(peer.receive(.request(blocks[3]), torrent: view, now: 1) == [.send(.rejectRequest(blocks[3]))])
        // Reads in flight still count against the queue.
        _ = peer.nextRequest()
        _ = peer.nextRequest()
        #expect(peer.receive(.request(blocks[4]), torrent: view, now: 1) == [.close(.requestFlood(2))])
    }

    @Test func disconnectsBadBitfieldsAndSeeds() {
        var peer = session()
        #expect(peer.receive(.bitfield([0xFF]), torrent: torrent(), now: 1) == [.close(.protocolError("bitfield of 1 bytes for 10 pieces"))])
        var spare = session()
        #expect(spare.receive(.bitfield([0xFF, 0xFF]), torrent: torrent(), now: 1).first.map { if case .close = $0 { true } else { false } } == true)
        var seed = session()
        #expect(seed.receive(.haveAll, torrent: torrent(), now: 1) == [.close(.bothSeeds)])
        var leecherAsPartialSeed = session()
        #expect(leecherAsPartialSeed.receive(.haveAll, torrent: torrent(complete: false), now: 1) == [])
        var haveOutOfRange = session()
        #expect(haveOutOfRange.receive(.have(piece: 10), torrent: torrent(), now: 1).count == 1)
        #expect(haveOutOfRange.isClosed)
    }

    /// A leecher keeps seeds (that is where its data comes from) until its own download
    /// completes; then the seeds go.
    @Test func seedsAreLetGoOnlyOnceOurDownloadCompletes() {
        var fromSeed = session()
        #expect(fromSeed.receive(.haveAll, torrent: torrent(complete: false), now: 1) == [])
        #expect(fromSeed.receive(.unchoke, torrent: torrent(complete: false), now: 1) == [])
        #expect(fromSeed.receive(.piece(piece: 0, offset: 0, data: [1, 2, 3]), torrent: torrent(complete: false), now: 1) == [])
        #expect(fromSeed.torrentCompleted(torrent: torrent()) == [.close(.bothSeeds)])
        var fromLeecher = session()
        #expect(fromLeecher.receive(.haveNone, torrent: torrent(complete: false), now: 1) == [])
        #expect(fromLeecher.torrentCompleted(torrent: torrent()) == [])
        #expect(!fromLeecher.isClosed)
    }

    @Test func keepsAliveAndTimesOut() {
        var peer = session()
        #expect(peer.tick(now: 59_000_000) == [])
        #expect(peer.tick(now: 60_000_000) == [.send(.keepAlive)])
        _ = peer.receive(.keepAlive, torrent: torrent(), now: 100_000_000)
        #expect(peer.tick(now: 219_999_999) == [.send(.keepAlive)])
        #expect(peer.tick(now: 220_000_000) == [.close(.timedOut("nothing received for 120 s"))])
    }
}


@Suite struct SeedChokerTests {
    @Test func unchokesEveryInterestedPeerWithoutSlots() {
        var choker = SeedChoker(slots: 0)
        var random = SplitMix64(seed: 1)
        let peers = (0..<5).map { SeedChoker.Peer(id: $0, interested: $0 != 2) }
        #expect(choker.rechoke(peers: peers, now: 0, using: &random) == [0, 1, 3, 4])
    }

    @Test func rotatesSlotsSoEveryPeerIsServed() {
        var choker = SeedChoker(slots: 2, slotDuration: 30_000_000, optimisticDuration: 30_000_000)
        var random = SplitMix64(seed: 7)
        let peers = (0..<6).map { SeedChoker.Peer(id: $0, interested: true) }
        var served = Set<Int>()
        var now: UInt64 = 0
        for _ in 0..<12 {
            let unchoked = choker.rechoke(peers: peers, now: now, using: &random)
            #expect(unchoked.count == 3)  // two slots and the optimistic one
            served.formUnion(unchoked)
            now += 10_000_000
        }
        #expect(served == Set(0..<6))
    }

    @Test func keepsASlotForItsQuantum() {
        var choker = SeedChoker(slots: 1, slotDuration: 30_000_000, optimisticDuration: 1_000_000_000)
        var random = SplitMix64(seed: 3)
        let peers = (0..<3).map { SeedChoker.Peer(id: $0, interested: true) }
        let first = choker.rechoke(peers: peers, now: 0, using: &random)
        let second = choker.rechoke(peers: peers, now: 10_000_000, using: &random)
        #expect(first == second)
    }
}
