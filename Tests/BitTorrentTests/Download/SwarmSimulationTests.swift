import Testing
@testable import BitTorrent
import SeededRandom

/// Three fake peers with different pieces, rates and choking habits feed one picker
/// over simulated time, through `PeerDownload`, until the torrent is complete.
@Suite struct SwarmSimulationTests {
    struct FakePeer {
        let pieces: Set<Int>
        let fast: Bool
        let blocksPerStep: Int
        var allowedFast: Set<Int> = []
        var choking = true
        /// Requests received and not yet served or cancelled, in order.
        var queue: [BlockRequest] = []
        var download: PeerDownload<Int>
    }

    struct Tally {
        var delivered: [BlockRequest: Int] = [:]
        var written: [BlockRequest: Int] = [:]
        /// Blocks that were ever outstanding at two peers at once.
        var duplicated: Set<BlockRequest> = []
        var requestsToPeersLacking = 0
        var requestsWhileChoked = 0
        var duplicatesOutsideEndGame = 0
        var maxInProgress = 0
        var closes = 0
    }

    @Test(arguments: [UInt64(1), 7, 2026])
    func downloadsEveryBlockOnceExceptEndGameDuplicates(seed: UInt64) {
        let cut = layout(pieces: 64, pieceLength: 256 * KiB, lastPiece: 100_000)
        var picker = PiecePicker<Int>(layout: cut, have: Bitfield(count: 64), configuration: {
            var configuration = PiecePicker<Int>.Configuration()
            configuration.partialPieceLimit = 4
            return configuration
        }())
        var random = DownloadRNG(seed: seed)
        var peers = [
            FakePeer(pieces: Set(0..<40), fast: true, blocksPerStep: 3, download: PeerDownload(peer: 0, peerSupportsFast: true, now: 0)),
            FakePeer(pieces: Set(24..<64), fast: false, blocksPerStep: 2, download: PeerDownload(peer: 1, peerSupportsFast: false, now: 0)),
            FakePeer(pieces: Set(0..<64), fast: true, blocksPerStep: 1, allowedFast: [3, 60],
                     download: PeerDownload(peer: 2, peerSupportsFast: true, now: 0)),
        ]
        var tally = Tally()
        var now: UInt64 = 0

        func handle(_ outputs: [PeerDownload<Int>.Output], at index: Int) {
            for output in outputs {
                switch output {
                case .send(.request(let block)):
                    if !peers[index].pieces.contains(block.piece) { tally.requestsToPeersLacking += 1 }
                    if peers[index].choking && !peers[index].allowedFast.contains(block.piece) { tally.requestsWhileChoked += 1 }
                    if case .requested(let requesters) = picker.state(of: block), requesters.count > 1 {
                        tally.duplicated.insert(block)
                        if !picker.isEndGame { tally.duplicatesOutsideEndGame += 1 }
                    }
                    peers[index].queue.append(block)
                case .send(.cancel(let block)):
                    peers[index].queue.removeAll { $0 == block }
                case .send:
                    break
                case .write(let block):
                    tally.written[block, default: 0] += 1
                case .verify(let piece):
                    _ = picker.pieceVerified(piece)
                    for other in peers.indices {
                        handle(peers[other].download.updateInterest(picker: picker), at: other)
                    }
                case .cancel(let block, let other):
                    handle(peers[other].download.cancel(block, picker: &picker, now: now, using: &random), at: other)
                case .close:
                    tally.closes += 1
                }
            }
        }

        func deliver(_ message: PeerMessage, to index: Int) {
            handle(peers[index].download.receive(message, picker: &picker, now: now, using: &random), at: index)
        }

        func choke(_ index: Int) {
            peers[index].choking = true
            deliver(.choke, to: index)
            // BEP 6: a fast peer rejects what it will not serve; others just drop it.
            let dropped = peers[index].queue.filter { !peers[index].fast || !peers[index].allowedFast.contains($0.piece) }
            peers[index].queue.removeAll { dropped.contains($0) }
            if peers[index].fast { for block in dropped { deliver(.rejectRequest(block), to: index) } }
        }

        func unchoke(_ index: Int) {
            peers[index].choking = false
            deliver(.unchoke, to: index)
        }

        // Opening messages: peer 0 a bitfield, peer 1 a bitfield (no fast extension),
        // peer 2 have_all and two allowed-fast pieces, choking us for a while.
        var bits = Bitfield(count: 64)
        for piece in peers[0].pieces { bits[piece] = true }
        deliver(.bitfield(bits.bytes), to: 0)
        bits = Bitfield(count: 64)
        for piece in peers[1].pieces { bits[piece] = true }
        deliver(.bitfield(bits.bytes), to: 1)
        deliver(.haveAll, to: 2)
        for piece in peers[2].allowedFast.sorted() { deliver(.allowedFast(piece: piece), to: 2) }
        unchoke(0)
        unchoke(1)

        var step = 0
        while !picker.isComplete && step < 20_000 {
            step += 1
            now += 100_000
            switch step {
            case 30: unchoke(2)
            case 40: choke(1)
            case 50: choke(0)
            case 55: unchoke(0)
            case 60: unchoke(1)
            default: break
            }
            for index in peers.indices {
                for _ in 0..<peers[index].blocksPerStep {
                    guard !peers[index].queue.isEmpty else { break }
                    let block = peers[index].queue.removeFirst()
                    tally.delivered[block, default: 0] += 1
                    deliver(.piece(piece: block.piece, offset: block.offset, data: [UInt8](repeating: UInt8(index), count: block.length)), to: index)
                }
            }
            if step % 10 == 0 {
                for index in peers.indices { handle(peers[index].download.tick(picker: &picker, now: now, using: &random), at: index) }
            }
            tally.maxInProgress = max(tally.maxInProgress, picker.inProgressCount)
        }

        #expect(picker.isComplete, "stalled after \(step) steps")
        #expect(picker.bytesLeft == 0)
        let blockCount = (0..<64).reduce(0) { $0 + cut.blockCount(ofPiece: $1) }
        #expect(tally.written.count == blockCount)
        #expect(tally.written.values.allSatisfy { $0 == 1 }, "every block written exactly once")
        for (block, times) in tally.delivered where times > 1 {
            #expect(tally.duplicated.contains(block), "\(block) arrived \(times) times without an end-game duplicate")
        }
        #expect(tally.requestsToPeersLacking == 0)
        #expect(tally.requestsWhileChoked == 0)
        #expect(tally.duplicatesOutsideEndGame == 0)
        #expect(tally.maxInProgress <= 2 * picker.partialPieceLimit)
        #expect(tally.closes == 0)
        #expect(peers.allSatisfy { !$0.download.amInterested })
        #expect(peers.allSatisfy { $0.download.unexpectedBlocks == 0 })
        // Every peer got work: rates and choking differ, nobody starves.
        for index in peers.indices {
            #expect(tally.delivered.contains { $0.key.piece >= 0 && peers[index].pieces.contains($0.key.piece) })
        }
        #expect(cut.length(ofPiece: 63) == 100_000 && tally.written[BlockRequest(piece: 63, offset: 6 * 16384, length: 1696)] == 1)
    }

    /// Peer 1 corrupts every block it sends. Failed pieces strike their contributors,
    /// parole keeps the honest peers from sharing the blame, the liar is banned at the
    /// third strike and disconnected, and the download completes from the others.
    @Test(arguments: [UInt64(3), 11, 99])
    func banishesALiarAndCompletesFromHonestPeers(seed: UInt64) {
        let cut = layout(pieces: 32, pieceLength: 128 * KiB, lastPiece: 50_000)
        var picker = PiecePicker<Int>(layout: cut, have: Bitfield(count: 32))
        var strikes = HashStrikes<Int>(threshold: 3)
        var random = DownloadRNG(seed: seed)
        let rates = [2, 3, 1]
        var downloads = (0..<3).map { PeerDownload<Int>(peer: $0, peerSupportsFast: true, now: 0) }
        var queues: [[BlockRequest]] = [[], [], []]
        var connected = [true, true, true]
        /// Who sent the copy of each block that was written.
        var source: [BlockRequest: Int] = [:]
        var failedPieces = 0
        var now: UInt64 = 0

        func handle(_ outputs: [PeerDownload<Int>.Output], at index: Int) {
            for output in outputs {
                switch output {
                case .send(.request(let block)): queues[index].append(block)
                case .send(.cancel(let block)): queues[index].removeAll { $0 == block }
                case .send: break
                case .write(let block): source[block] = index
                case .verify(let piece):
                    let blocks = (0..<cut.blockCount(ofPiece: piece)).map { cut.block($0, ofPiece: piece) }
                    if blocks.contains(where: { source[$0] == 1 }) {
                        failedPieces += 1
                        guard let failure = picker.pieceFailed(piece) else {
                            Issue.record("piece \(piece) was not in progress")
                            continue
                        }
                        #expect(failure.contributors.contains(1))
                        for peer in strikes.pieceFailed(blamed: failure.blamed) {
                            connected[peer] = false
                            queues[peer] = []
                            downloads[peer].disconnected(picker: &picker)
                        }
                    } else {
                        _ = picker.pieceVerified(piece)
                        for other in downloads.indices { handle(downloads[other].updateInterest(picker: picker), at: other) }
                    }
                case .cancel(let block, let other):
                    handle(downloads[other].cancel(block, picker: &picker, now: now, using: &random), at: other)
                case .close:
                    Issue.record("unexpected close")
                }
            }
        }

        for index in downloads.indices {
            handle(downloads[index].receive(.haveAll, picker: &picker, now: now, using: &random), at: index)
            handle(downloads[index].receive(.unchoke, picker: &picker, now: now, using: &random), at: index)
        }
        var step = 0
        while !picker.isComplete && step < 20_000 {
            step += 1
            now += 100_000
            for index in downloads.indices where connected[index] {
                for _ in 0..<rates[index] {
                    guard !queues[index].isEmpty else { break }
                    let block = queues[index].removeFirst()
                    let message = PeerMessage.piece(piece: block.piece, offset: block.offset, data: [UInt8](repeating: 0, count: block.length))
                    handle(downloads[index].receive(message, picker: &picker, now: now, using: &random), at: index)
                }
            }
            if step % 10 == 0 {
                for index in downloads.indices where connected[index] {
                    handle(downloads[index].tick(picker: &picker, now: now, using: &random), at: index)
                }
            }
        }
        #expect(picker.isComplete, "stalled after \(step) steps")
        #expect(strikes.isBanned(1) && !connected[1])
        #expect(!strikes.isBanned(0) && !strikes.isBanned(2))
        #expect(strikes.strikes(of: 0) <= 1 && strikes.strikes(of: 2) <= 1, "parole spares the honest")
        #expect(failedPieces >= 3)
    }
}
