import BitTorrent
import SeededRandom

/// libFuzzer entry: a hostile peer's byte stream through the BEP 3 handshake, the
/// message framing, and every per-connection state machine that a real connection
/// (`PeerConnection.processInput`) feeds messages to, in the same order: `PeerSession`
/// (the seed side, BEP 6 fast extension and BEP 10 extension handshake), then
/// `PeerDownload` with its `RequestPipeline` against a `PiecePicker` of a small torrent
/// (the download side), with disk reads, hash checks and timers completing when the
/// input says. Nothing may trap, and what is cheap to check is checked: the decoder
/// hands back exactly the bytes it was given, each message re-encodes to its own
/// bytes, every request we send or block we serve fits the torrent, a fast peer's
/// request is answered exactly once, and nothing outlives a disconnect.
///
/// Input: two header bytes, then records `[op] [length] [length bytes]`. The records'
/// bytes, concatenated, are the peer's stream, cut into reads where the records cut it.
///
/// Header byte 0: bits 0-1 the torrent's layout; bits 2-3 what we have (nothing, all,
/// every other piece, all but the last); 0x10 we dialled, so the peer's whole 68-byte
/// handshake comes back (else we accepted: 48 bytes, then the peer id); 0x20 no
/// handshake (the stream is messages, reserved bits from byte 1); 0x40 a second peer, a
/// seed that takes requests and never answers, so end game and time-outs involve another
/// peer.
/// Header byte 1: 0x01 extension protocol and 0x02 fast extension when there is no
/// handshake; bits 2-7 our request queue (`reqq` 1...64).
/// Op: 0x01 the chunk is read through `fill` (TCP) rather than `append` (uTP); 0x02 the
/// clock advances 7 s (61 s with 0x80) and everything ticks; 0x04 disk reads in flight
/// finish (0x40: they fail); 0x08 we toggle our choke; 0x10 hash checks in flight finish
/// (0x20: mismatch).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPeerWire(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 2 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let connection = FuzzConnection(header: input[0], options: input[1])
    var index = 2
    while index + 2 <= size, !connection.closed {
        let op = input[index]
        let length = min(Int(input[index + 1]), size - index - 2)
        index += 2
        connection.feed(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: input[index..<(index + length)])), op: op)
        index += length
        connection.events(op)
    }
    connection.finish()
    return 0
}

/// One peer connection as `PeerConnection` drives it, minus the sockets and the disk.
final class FuzzConnection {
    enum Phase {
        case awaitingHandshake
        /// Inbound: the prefix already read, for the re-encoding check.
        case awaitingPeerID(prefix: [UInt8], reserved: [UInt8])
        case active
    }

    static let layouts: [BlockLayout] = [
        // Two blocks a piece, a 100-byte last piece: a whole piece fits in one input.
        BlockLayout(pieceCount: 3, pieceLength: 32 << 10, totalLength: 2 * (32 << 10) + 100),
        // A bitfield with 7 spare bits.
        BlockLayout(pieceCount: 9, pieceLength: 16 << 10, totalLength: 8 * (16 << 10) + 1),
        // One 40-byte piece.
        BlockLayout(pieceCount: 1, pieceLength: 16 << 10, totalLength: 40),
        // A piece length that is not a multiple of the block size.
        BlockLayout(pieceCount: 17, pieceLength: 20_000, totalLength: 16 * 20_000 + 300),
    ]

    static let fuzzPeer = 1
    static let silentPeer = 2
    static let maxReadsInFlight = 8

    let layout: BlockLayout
    let outgoing: Bool
    let sessionConfiguration: PeerSession.Configuration
    let pipelineConfiguration: RequestPipeline.Configuration
    var picker: PiecePicker<Int>
    var view: TorrentView
    var decoder: PeerMessageDecoder
    var phase: Phase
    var session: PeerSession?
    var download: PeerDownload<Int>?
    var silent: PeerDownload<Int>?
    var strikes = HashStrikes<Int>(threshold: 2)
    var rng = SplitMix64(seed: 7)
    var now: UInt64 = 1_000_000
    private(set) var closed = false

    /// Every byte fed, and how many of them the decoder has handed back.
    var stream: [UInt8] = []
    var consumed = 0
    /// Requests the peer made that are still owed a `piece` or `reject_request`.
    var owed: [BlockRequest: Int] = [:]
    /// Blocks requested again while still owed: libtorrent ignores such duplicates
    /// too, so they are exempt from the exactly-one-answer check.
    var duplicated: Set<BlockRequest> = []
    /// Blocks taken from `PeerSession.nextRequest`, being "read from disk".
    var reads: [BlockRequest] = []
    /// Pieces whose last block was written, waiting for their hash check.
    var verifying: [Int] = []

    init(header: UInt8, options: UInt8) {
        layout = Self.layouts[Int(header & 3)]
        var have = Bitfield(count: layout.pieceCount)
        switch (header >> 2) & 3 {
        case 0: break
        case 1: have.setAll()
        case 2: for piece in stride(from: 0, to: layout.pieceCount, by: 2) { have[piece] = true }
        default: for piece in 0..<(layout.pieceCount - 1) { have[piece] = true }
        }
        var pickerConfiguration = PiecePicker<Int>.Configuration()
        pickerConfiguration.partialPieceLimit = 2
        pickerConfiguration.allowedFastLimit = 4
        pickerConfiguration.retryMemory = 8
        picker = PiecePicker(layout: layout, have: have, configuration: pickerConfiguration)
        view = TorrentView(pieceCount: layout.pieceCount, pieceLength: layout.pieceLength, totalLength: layout.totalLength, have: have)
        var sessionConfiguration = PeerSession.Configuration()
        sessionConfiguration.requestQueueLength = Int(options >> 2) + 1
        sessionConfiguration.listenPort = 6881
        self.sessionConfiguration = sessionConfiguration
        var pipelineConfiguration = RequestPipeline.Configuration()
        pipelineConfiguration.maximumDepth = 24
        pipelineConfiguration.releasedMemory = 8
        self.pipelineConfiguration = pipelineConfiguration

        outgoing = header & 0x10 != 0
        // Before the handshake names a torrent, an inbound connection does not know the
        // bitfield's size; an outbound one does.
        decoder = PeerMessageDecoder(maxMessageLength: PeerMessageDecoder.limit(pieceCount: outgoing ? layout.pieceCount : 0))
        phase = outgoing ? .awaitingPeerID(prefix: [], reserved: []) : .awaitingHandshake
        if header & 0x20 != 0 {
            var reserved = [UInt8](repeating: 0, count: 8)
            if options & 1 != 0 { reserved[5] |= 0x10 }
            if options & 2 != 0 { reserved[7] |= 0x04 }
            decoder.maxMessageLength = PeerMessageDecoder.limit(pieceCount: layout.pieceCount)
            activate(reserved: reserved)
        }
        if header & 0x40 != 0, !picker.isComplete {
            var seed = PeerDownload(peer: Self.silentPeer, peerSupportsFast: true, pipeline: pipelineConfiguration, now: now)
            let outputs = seed.receive(.haveAll, picker: &picker, now: now, using: &rng)
                + seed.receive(.unchoke, picker: &picker, now: now, using: &rng)
            silent = seed
            carryOut(outputs, from: Self.silentPeer)
        }
    }

    // MARK: Input

    func feed(_ chunk: UnsafeRawBufferPointer, op: UInt8) {
        guard !closed else { return }
        if op & 1 != 0 {
            // A socket read: room for more than arrived, as `recv` asks for.
            let added = decoder.fill(capacity: chunk.count + Int(op >> 2) * 61) { room in
                room.copyMemory(from: chunk)
                return chunk.count
            }
            precondition(added == chunk.count, "fill dropped bytes")
        } else {
            decoder.append(chunk)
        }
        stream.append(contentsOf: chunk)
        process()
        pumpReads()
    }

    private func process() {
        while !closed {
            switch phase {
            case .awaitingHandshake:
                guard decoder.bufferedByteCount >= Handshake.prefixLength else { return checkBuffered() }
                let prefix = take(Handshake.prefixLength)
                guard let parsed = try? Handshake.parsePrefix(prefix) else { return close() }
                // Any info-hash is taken as ours: the server would look it up among its
                // torrents, and guessing 20 bytes is not what this entry is for.
                decoder.maxMessageLength = PeerMessageDecoder.limit(pieceCount: layout.pieceCount)
                phase = .awaitingPeerID(prefix: prefix, reserved: parsed.reserved)
            case .awaitingPeerID(let prefix, var reserved):
                if outgoing {
                    guard decoder.bufferedByteCount >= Handshake.length else { return checkBuffered() }
                    let bytes = take(Handshake.length)
                    guard let parsed = try? Handshake.parsePrefix(bytes) else { return close() }
                    let again = Handshake(reserved: parsed.reserved, infoHash: parsed.infoHash, peerID: Array(bytes[48...]))
                    precondition(again.encoded() == bytes, "handshake re-encodes differently")
                    reserved = parsed.reserved
                } else {
                    guard decoder.bufferedByteCount >= 20 else { return checkBuffered() }
                    let peerID = take(20)
                    let parsed = try! Handshake.parsePrefix(prefix)
                    let again = Handshake(reserved: parsed.reserved, infoHash: parsed.infoHash, peerID: peerID)
                    precondition(again.encoded() == prefix + peerID, "handshake re-encodes differently")
                }
                activate(reserved: reserved)
            case .active:
                let message: PeerMessage?
                do {
                    message = try decoder.next()
                } catch {
                    if case .messageTooLong(let length, let limit) = error {
                        precondition(length > limit && limit == decoder.maxMessageLength)
                    }
                    precondition(!error.description.isEmpty)
                    return close()
                }
                guard let message else { return checkBuffered() }
                account(message)
                receive(message)
            }
        }
    }

    private func take(_ count: Int) -> [UInt8] {
        guard let bytes = decoder.takeRaw(count) else { preconditionFailure("takeRaw refused buffered bytes") }
        precondition(bytes.count == count && stream[consumed..<(consumed + count)].elementsEqual(bytes), "takeRaw returned other bytes")
        consumed += count
        precondition(decoder.bufferedByteCount == stream.count - consumed, "the decoder lost or invented bytes")
        return bytes
    }

    /// The decoder handed back a message: it must be exactly the next bytes of the stream.
    private func account(_ message: PeerMessage) {
        let count: Int
        if case .unknown(let id, let length) = message {
            precondition(PeerMessage.ID(rawValue: id) == nil && length >= 1 && stream[consumed + 4] == id)
            count = 4 + length
        } else {
            let encoded = message.encoded()
            precondition(encoded.count <= stream.count - consumed, "decoded more bytes than were given")
            precondition(stream[consumed..<(consumed + encoded.count)].elementsEqual(encoded), "message re-encodes differently")
            count = encoded.count
        }
        precondition(count - 4 <= decoder.maxMessageLength)
        consumed += count
        precondition(decoder.bufferedByteCount == stream.count - consumed, "the decoder lost or invented bytes")
    }

    /// Waiting for more input holds at most one message (or the handshake) buffered.
    private func checkBuffered() {
        precondition(decoder.bufferedByteCount < 4 + max(Handshake.length, decoder.maxMessageLength), "buffered past one message")
    }

    private func activate(reserved: [UInt8]) {
        var session = PeerSession(configuration: sessionConfiguration, peerReserved: reserved, now: now)
        let outputs = session.start(torrent: view, yourIP: [127, 0, 0, 1], now: now)
        self.session = session
        phase = .active
        if !picker.isComplete {
            download = PeerDownload(peer: Self.fuzzPeer, peerSupportsFast: session.peerSupportsFast, pipeline: pipelineConfiguration, now: now)
        }
        perform(outputs)
    }

    private func receive(_ message: PeerMessage) {
        if case .extended(0, let payload) = message, let handshake = try? ExtensionHandshake(payload: payload) {
            precondition((try? ExtensionHandshake(payload: handshake.encoded())) == handshake, "extension handshake round trip")
        }
        if case .request(let block) = message, session?.isClosed == false {
            if owed[block] != nil { duplicated.insert(block) }
            owed[block, default: 0] += 1
        }
        guard perform(session!.receive(message, torrent: view, now: now)) else { return }
        guard download != nil else { return }
        if case .extended(0, _) = message, let handshake = session!.peerExtensions {
            download!.extensionHandshake(handshake)
            return
        }
        carryOut(download!.receive(message, picker: &picker, now: now, using: &rng), from: Self.fuzzPeer)
    }

    // MARK: Events

    func events(_ op: UInt8) {
        if op & 0x02 != 0 { tick(seconds: op & 0x80 != 0 ? 61 : 7) }
        if op & 0x04 != 0 { finishReads(failing: op & 0x40 != 0) }
        if op & 0x08 != 0, session != nil, !closed { perform(session!.setChoking(!session!.amChoking, now: now)) }
        if op & 0x10 != 0 { finishHashChecks(failing: op & 0x20 != 0) }
        pumpReads()
        checkInvariants()
    }

    private func tick(seconds: UInt64) {
        now += seconds * 1_000_000
        if session != nil, !closed { perform(session!.tick(now: now)) }
        if download != nil, !closed { carryOut(download!.tick(picker: &picker, now: now, using: &rng), from: Self.fuzzPeer) }
        if silent != nil { carryOut(silent!.tick(picker: &picker, now: now, using: &rng), from: Self.silentPeer) }
    }

    /// What `pumpReads` does: hands queued requests to the disk, a few in flight.
    private func pumpReads() {
        guard !closed, session != nil else { return }
        while reads.count < Self.maxReadsInFlight, let block = session!.nextRequest() {
            // Requests reach the disk only once checked against the torrent.
            precondition(block.piece < view.pieceCount && view.have[block.piece], "reading a piece we do not have")
            precondition(block.length > 0 && block.length <= BlockRequest.maxLength, "reading a block of a bad size")
            precondition(block.offset + block.length <= view.length(ofPiece: block.piece), "reading past the piece")
            reads.append(block)
        }
    }

    private func finishReads(failing: Bool) {
        let done = reads
        reads = []
        for block in done where !closed {
            if failing {
                perform(session!.blockReadFailed(block))
            } else if session!.blockRead(block, now: now) == .send {
                answered(block)
            }
        }
    }

    private func finishHashChecks(failing: Bool) {
        let pieces = verifying
        verifying = []
        for piece in pieces {
            if failing {
                guard let failure = picker.pieceFailed(piece) else { continue }
                precondition(failure.blamed.isSubset(of: failure.contributors) && !failure.contributors.contains(Self.silentPeer))
                if strikes.pieceFailed(blamed: failure.blamed).contains(Self.fuzzPeer) { close() }
                continue
            }
            let bored = picker.pieceVerified(piece)
            guard !view.have[piece] else { continue }
            view.have[piece] = true
            precondition(view.have == picker.have, "the seed side and the picker disagree on what we have")
            if !closed { perform(session!.announce(piece: piece, now: now)) }
            for peer in bored where peer == Self.fuzzPeer && download != nil && !closed {
                carryOut(download!.updateInterest(picker: picker), from: Self.fuzzPeer)
            }
            if picker.isComplete {
                // The download is done: its halves go, and the seed side decides
                // whether the peer is still worth keeping.
                download?.disconnected(picker: &picker)
                download = nil
                silent?.disconnected(picker: &picker)
                silent = nil
                if !closed { perform(session!.torrentCompleted(torrent: view)) }
            }
        }
    }

    // MARK: Outputs

    /// Carries out the seed side's outputs; false once the connection closed.
    @discardableResult
    private func perform(_ outputs: [PeerSession.Output]) -> Bool {
        for output in outputs {
            switch output {
            case .send(let message):
                switch message {
                case .rejectRequest(let block):
                    precondition(session!.peerSupportsFast, "reject_request to a peer without the fast extension")
                    answered(block)
                case .have(let piece):
                    precondition(view.have[piece])
                case .keepAlive, .choke, .unchoke, .bitfield, .haveAll, .haveNone, .extended:
                    break
                default:
                    preconditionFailure("the seed side sent \(message)")
                }
            case .close:
                close()
                return false
            }
        }
        return !closed
    }

    /// A `piece` or `reject_request` went out: BEP 6 allows one per request.
    private func answered(_ block: BlockRequest) {
        guard let count = owed[block] else { preconditionFailure("answered \(block), which is not owed") }
        owed[block] = count > 1 ? count - 1 : nil
    }

    /// Carries out a download half's outputs, as `PeerConnection.carryOut` does.
    private func carryOut(_ outputs: [PeerDownload<Int>.Output], from peer: Int) {
        if peer == Self.fuzzPeer, !closed, outputs.contains(where: { if case .send = $0 { true } else { false } }) {
            // What the download side sends counts against the keepalive, as it does live.
            session!.sent(now: now)
        }
        for output in outputs {
            switch output {
            case .send(let message):
                switch message {
                case .request(let block):
                    precondition(layout.blockIndex(of: block) != nil && !picker.have[block.piece], "requested a block we cannot use")
                    precondition(picker.peerHas(peer, piece: block.piece), "requested a piece the peer lacks")
                    let choking = peer == Self.fuzzPeer ? download?.peerChoking : silent?.peerChoking
                    precondition(choking != true || picker.allowedFast(of: peer).contains(block.piece), "requested while choked")
                case .cancel(let block):
                    precondition(layout.blockIndex(of: block) != nil)
                case .interested, .notInterested:
                    break
                default:
                    preconditionFailure("the download side sent \(message)")
                }
            case .write(let block):
                precondition(peer == Self.fuzzPeer && layout.blockIndex(of: block) != nil, "writing a block that is not ours")
            case .verify(let piece):
                precondition(piece >= 0 && piece < layout.pieceCount)
                verifying.append(piece)
            case .cancel(let block, let other):
                precondition(other != peer, "end game cancels at the sender")
                if other == Self.silentPeer, silent != nil {
                    carryOut(silent!.cancel(block, picker: &picker, now: now, using: &rng), from: other)
                } else if other == Self.fuzzPeer, download != nil, !closed {
                    carryOut(download!.cancel(block, picker: &picker, now: now, using: &rng), from: other)
                }
            case .close:
                precondition(peer == Self.fuzzPeer, "the silent seed broke the protocol")
                close()
                return
            }
        }
    }

    // MARK: Ending

    private func close() {
        guard !closed else { return }
        closed = true
        download?.disconnected(picker: &picker)
        download = nil
        reads = []
    }

    private func checkInvariants() {
        if let session, !closed {
            precondition(session.queuedCount + session.readingCount <= sessionConfiguration.requestQueueLength, "past our reqq")
        }
        for pipeline in [download?.pipeline, silent?.pipeline].compactMap({ $0 }) {
            precondition(pipeline.outstandingCount <= pipelineConfiguration.maximumDepth, "pipeline past its ceiling")
        }
        precondition(picker.partialPieces.count <= 2 * picker.partialPieceLimit, "partial pieces past twice the limit")
    }

    /// Every peer leaves: nothing of theirs may stay in the picker.
    func finish() {
        if !closed {
            // The disk answers everything still queued.
            pumpReads()
            while !reads.isEmpty {
                finishReads(failing: false)
                pumpReads()
            }
        }
        if !closed, session?.peerSupportsFast == true {
            // BEP 6: every request gets exactly one `piece` or `reject_request`.
            for (block, _) in owed where !duplicated.contains(block) {
                preconditionFailure("request for \(block) never answered")
            }
        }
        close()
        silent?.disconnected(picker: &picker)
        silent = nil
        for peer in [Self.fuzzPeer, Self.silentPeer] {
            precondition(picker.requests(of: peer).isEmpty, "requests outlived the peer")
        }
        for piece in 0..<layout.pieceCount {
            precondition(picker.availability(ofPiece: piece) == 0, "availability outlived the peers")
        }
        for piece in picker.partialPieces {
            for index in 0..<layout.blockCount(ofPiece: piece) {
                if case .requested? = picker.state(of: layout.block(index, ofPiece: piece)) {
                    preconditionFailure("a block is still requested after every peer left")
                }
            }
        }
    }
}
