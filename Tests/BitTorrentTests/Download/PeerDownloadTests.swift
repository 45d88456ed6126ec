import Testing
@testable import BitTorrent
import SeededRandom

@Suite struct PeerDownloadTests {
    typealias Output = PeerDownload<Int>.Output

    static func requests(_ outputs: [Output]) -> [BlockRequest] {
        outputs.compactMap { if case .send(.request(let block)) = $0 { return block } else { return nil } }
    }

    @Test func asksOnlyOnceUnchokedAndInterested() {
        var picker = picker(layout(pieces: 4, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 1)
        var peer = PeerDownload<Int>(peer: 1, peerSupportsFast: true, now: 0)
        #expect(peer.receive(.bitfield([0b1100_0000]), picker: &picker, now: 0, using: &random) == [.send(.interested)])
        let unchoked = peer.receive(.unchoke, picker: &picker, now: 1, using: &random)
        #expect(Self.requests(unchoked).count == 4)
        #expect(Self.requests(unchoked).allSatisfy { $0.piece < 2 })
        #expect(peer.pipeline.outstanding.count == 4)
    }

    @Test func rejectPutsTheBlockBackForOthers() {
        var picker = picker(layout(pieces: 2, pieceLength: 64 * KiB))
        var random = DownloadRNG(seed: 1)
        var a = PeerDownload<Int>(peer: 1, peerSupportsFast: true, now: 0)
        var b = PeerDownload<Int>(peer: 2, peerSupportsFast: true, now: 0)
        _ = a.receive(.haveAll, picker: &picker, now: 0, using: &random)
        let asked = Self.requests(a.receive(.unchoke, picker: &picker, now: 0, using: &random))
        #expect(asked.count == 4)
        // The freed slot is refilled, but not with the block just refused.
        let refill = Self.requests(a.receive(.rejectRequest(asked[0]), picker: &picker, now: 1, using: &random))
        #expect(refill.count == 1 && refill[0] != asked[0])
        #expect(!a.pipeline.isOutstanding(asked[0]) && picker.state(of: asked[0]) == .open)
        _ = b.receive(.haveAll, picker: &picker, now: 2, using: &random)
        // Partial pieces first: the rejected block leads peer 2's requests.
        let retaken = Self.requests(b.receive(.unchoke, picker: &picker, now: 2, using: &random))
        #expect(retaken.first == asked[0])
        // A reject for what is no longer outstanding is ignored.
        #expect(a.receive(.rejectRequest(asked[0]), picker: &picker, now: 3, using: &random) == [])
        #expect(picker.requests(of: 2).contains(asked[0]))
    }

    @Test func allowedFastPiecesAreAskedForWhileChoked() {
        var picker = picker(layout(pieces: 8, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 1)
        var peer = PeerDownload<Int>(peer: 1, peerSupportsFast: true, now: 0)
        #expect(peer.receive(.haveAll, picker: &picker, now: 0, using: &random) == [.send(.interested)])
        let out = peer.receive(.allowedFast(piece: 6), picker: &picker, now: 0, using: &random)
        #expect(Self.requests(out) == [BlockRequest(piece: 6, offset: 0, length: 16384), BlockRequest(piece: 6, offset: 16384, length: 16384)])
        #expect(peer.receive(.allowedFast(piece: 99), picker: &picker, now: 0, using: &random) == [], "out of range: ignored")
        // Rejected while choked: no longer allowed fast, and not asked again.
        #expect(peer.receive(.rejectRequest(BlockRequest(piece: 6, offset: 0, length: 16384)), picker: &picker, now: 1, using: &random) == [])
        #expect(picker.allowedFast(of: 1).isEmpty)
    }

    @Test func chokeFromAPeerWithoutFastDropsRequests() {
        var picker = picker(layout(pieces: 2, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 1)
        var plain = PeerDownload<Int>(peer: 1, peerSupportsFast: false, now: 0)
        _ = plain.receive(.bitfield([0b1100_0000]), picker: &picker, now: 0, using: &random)
        let asked = Self.requests(plain.receive(.unchoke, picker: &picker, now: 0, using: &random))
        #expect(plain.receive(.choke, picker: &picker, now: 1, using: &random) == [])
        #expect(plain.pipeline.outstanding.isEmpty)
        for block in asked { #expect(picker.state(of: block) == .open) }

        var fast = PeerDownload<Int>(peer: 2, peerSupportsFast: true, now: 0)
        _ = fast.receive(.haveAll, picker: &picker, now: 2, using: &random)
        let fastAsked = Self.requests(fast.receive(.unchoke, picker: &picker, now: 2, using: &random))
        #expect(fast.receive(.choke, picker: &picker, now: 3, using: &random) == [])
        #expect(fast.pipeline.outstanding.count == fastAsked.count, "a fast peer rejects each one itself")
    }

    @Test func blocksAreWrittenVerifiedAndDuplicatesCancelled() {
        var picker = picker(layout(pieces: 1, pieceLength: 16 * KiB))
        var random = DownloadRNG(seed: 1)
        var a = PeerDownload<Int>(peer: 1, peerSupportsFast: true, now: 0)
        var b = PeerDownload<Int>(peer: 2, peerSupportsFast: false, now: 0)
        _ = a.receive(.haveAll, picker: &picker, now: 0, using: &random)
        _ = b.receive(.bitfield([0b1000_0000]), picker: &picker, now: 0, using: &random)
        let block = BlockRequest(piece: 0, offset: 0, length: 16384)
        #expect(Self.requests(a.receive(.unchoke, picker: &picker, now: 0, using: &random)) == [block])
        #expect(Self.requests(b.receive(.unchoke, picker: &picker, now: 0, using: &random)) == [block], "end game")
        let data = [UInt8](repeating: 7, count: 16384)
        let out = b.receive(.piece(piece: 0, offset: 0, data: data), picker: &picker, now: 5, using: &random)
        #expect(out == [.write(block), .cancel(block, at: 1), .verify(piece: 0)])
        #expect(a.cancel(block, picker: &picker, now: 5, using: &random) == [.send(.cancel(block))])
        #expect(a.cancel(block, picker: &picker, now: 5, using: &random) == [], "once")
        #expect(picker.pieceVerified(0).sorted() == [1, 2])
        #expect(a.updateInterest(picker: picker) == [.send(.notInterested)])
        // The cancelled block arriving anyway is dropped without blame.
        #expect(a.receive(.piece(piece: 0, offset: 0, data: data), picker: &picker, now: 6, using: &random) == [])
        #expect(a.unexpectedBlocks == 0)
        // A block nobody asked for is counted.
        _ = a.receive(.piece(piece: 0, offset: 100, data: data), picker: &picker, now: 7, using: &random)
        #expect(a.unexpectedBlocks == 1)
    }

    @Test func timedOutRequestsGoToAnotherPeer() {
        var picker = picker(layout(pieces: 1, pieceLength: 16 * KiB))
        var random = DownloadRNG(seed: 1)
        var slow = PeerDownload<Int>(peer: 1, peerSupportsFast: true, now: 0)
        var quick = PeerDownload<Int>(peer: 2, peerSupportsFast: true, now: 0)
        _ = slow.receive(.haveAll, picker: &picker, now: 0, using: &random)
        let block = BlockRequest(piece: 0, offset: 0, length: 16384)
        #expect(Self.requests(slow.receive(.unchoke, picker: &picker, now: 0, using: &random)) == [block])
        #expect(slow.tick(picker: &picker, now: 20_000_000, using: &random) == [], "timed out, not asked again of the same peer")
        #expect(picker.state(of: block) == .open)
        _ = quick.receive(.haveAll, picker: &picker, now: 20_000_001, using: &random)
        #expect(Self.requests(quick.receive(.unchoke, picker: &picker, now: 20_000_001, using: &random)) == [block])
    }

    @Test func protocolErrorsClose() {
        var picker = picker(layout(pieces: 4, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 1)
        for message: PeerMessage in [.haveAll, .haveNone, .allowedFast(piece: 1), .rejectRequest(BlockRequest(piece: 0, offset: 0, length: 16384))] {
            var plain = PeerDownload<Int>(peer: 1, peerSupportsFast: false, now: 0)
            let out = plain.receive(message, picker: &picker, now: 0, using: &random)
            #expect(out.count == 1 && plain.isClosed)
            #expect(plain.receive(.unchoke, picker: &picker, now: 0, using: &random) == [])
        }
        var peer = PeerDownload<Int>(peer: 2, peerSupportsFast: true, now: 0)
        #expect(peer.receive(.have(piece: 4), picker: &picker, now: 0, using: &random) == [.close(.protocolError("have for piece 4 of 4"))])
        var other = PeerDownload<Int>(peer: 3, peerSupportsFast: true, now: 0)
        #expect(other.receive(.bitfield([0xFF]), picker: &picker, now: 0, using: &random) == [.close(.protocolError("bitfield of 1 bytes for 4 pieces"))])
    }

    @Test func reqqFromTheExtensionHandshakeCapsThePipeline() throws {
        var handshake = ExtensionHandshake()
        handshake.requestQueueLength = 3
        var peer = PeerDownload<Int>(peer: 1, peerSupportsFast: true, now: 0)
        peer.extensionHandshake(try ExtensionHandshake(payload: handshake.encoded()))
        #expect(peer.pipeline.depth == 3)
    }

    @Test func disconnectReleasesEverything() {
        var picker = picker(layout(pieces: 2, pieceLength: 32 * KiB))
        var random = DownloadRNG(seed: 1)
        var peer = PeerDownload<Int>(peer: 1, peerSupportsFast: true, now: 0)
        _ = peer.receive(.haveAll, picker: &picker, now: 0, using: &random)
        let asked = Self.requests(peer.receive(.unchoke, picker: &picker, now: 0, using: &random))
        peer.disconnected(picker: &picker)
        #expect(picker.availability(ofPiece: 0) == 0)
        for block in asked { #expect(picker.state(of: block) == .open) }
        #expect(peer.receive(.have(piece: 1), picker: &picker, now: 1, using: &random) == [])
    }
}
