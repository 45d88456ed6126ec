/// Which blocks to ask which peer for, torrent-wide (BEP 3 "rarest first"), and the
/// bookkeeping of every block in flight. Pure: no I/O, no clock, no randomness of its
/// own; peers are whatever `Peer` the caller keys its connections by (a connection id,
/// or an id plus address so that hash-failure contributors can be struck by address).
///
/// Policy, in the order `pick` applies it:
/// 1. Partial pieces first: open blocks of pieces already started, most advanced first,
///    so pieces complete (and can be verified, announced and served) instead of many
///    pieces being a little done. The number of pieces in progress is bounded by
///    `Configuration.partialPieceLimit`, which bounds the bookkeeping, the unverified
///    data on disk and what is lost when a peer goes away.
/// 2. Then new pieces, rarest first among the pieces the peer has, ties broken at random
///    (the caller's generator) so that peers with the same view do not all start the
///    same piece.
/// 3. End game, once every missing block is requested: blocks already requested from
///    other peers, least-duplicated first, so one slow peer cannot hold the last piece
///    hostage. When such a block arrives the other peers' requests are reported for
///    `cancel`.
///
/// Never a piece we have, one waiting for its hash check, or one the peer has not
/// announced; while the peer chokes us, only its BEP 6 allowed-fast pieces.
///
/// Parole: every peer that sent a block of a piece that failed its hash check then
/// downloads whole pieces on its own (nobody joins them, it joins nobody's) until one
/// of its pieces verifies. The next failure is then blamed on one peer only, so an
/// honest peer that once shared a piece with a liar does not collect more strikes.
///
/// Hostile input never traps: piece indices from the wire are range-checked, and
/// blocks are matched against `BlockLayout` (offset and exact length) before they touch
/// the bookkeeping.
public struct PiecePicker<Peer: Hashable> {
    public struct Configuration: Sendable {
        /// Pieces in progress (some block requested, not every block received) past
        /// which no new piece is started, except one at a time for a peer that can
        /// help with none of them; never more than twice this many. nil: 256 MiB of
        /// pieces, clamped to 8...1024 (see `defaultPartialPieceLimit`).
        public var partialPieceLimit: Int?
        /// In end game, how many peers may be asked for the same block at once.
        public var endGameRequestsPerBlock = 3
        /// BEP 6 allowed-fast pieces remembered per peer. The BEP suggests sets of 10;
        /// a peer sending thousands must not grow our memory.
        public var allowedFastLimit = 64
        /// A block a peer rejected or let time out is not offered to that same peer
        /// again for this long, so it goes to another peer instead of back and forth
        /// with one that will not serve it; afterwards it may (a lone seed must still
        /// be asked again).
        public var retryDelay: UInt64 = 30_000_000
        /// Such blocks remembered per peer; past this the oldest memories are dropped.
        public var retryMemory = 256

        public init() {}

        /// Enough pieces in flight to keep fast pipelines full (3 s at 100 MB/s is
        /// about 300 MB of requests), few enough that a 16 MiB-piece torrent keeps
        /// its unverified data small.
        public static func defaultPartialPieceLimit(pieceLength: Int) -> Int {
            min(1024, max(8, (256 << 20) / max(1, pieceLength)))
        }
    }

    /// What to do with a block that arrived, from `blockReceived`.
    public enum BlockReceipt: Equatable {
        /// Write the block. If `completesPiece`, it was the piece's last missing block:
        /// hash the piece once written, then report `pieceVerified` or `pieceFailed`.
        /// `cancel` lists other peers that have the same block outstanding (end game):
        /// send each a `cancel` for it and drop it from their pipelines.
        case accepted(completesPiece: Bool, cancel: [Peer])
        /// We already have this block (an end-game or cancel race): drop it. Not the
        /// peer's fault.
        case duplicate
        /// Not a block we asked anyone for: no such block (offset or length wrong,
        /// piece out of range) or a piece nobody was asked for. Drop it; the caller may
        /// count it against the peer.
        case unexpected
    }

    /// Who is to blame for a piece that failed its hash check, from `pieceFailed`.
    public struct HashFailure: Equatable {
        /// Every peer that sent a block of the piece.
        public var contributors: Set<Peer>
        /// The contributors to strike (`HashStrikes`): all of them, except peers
        /// already on parole for an earlier failure whose blocks here predate it (the
        /// piece was shared, so the blame is not theirs alone and they were struck
        /// already). A peer on parole is struck for each of its own pieces that fails.
        public var blamed: Set<Peer>

        public init(contributors: Set<Peer>, blamed: Set<Peer>) {
            self.contributors = contributors
            self.blamed = blamed
        }
    }

    struct PeerEntry {
        /// The pieces the peer announced; empty (count 0) for a seed, which is counted
        /// in `seedCount` instead of in `availability`.
        var pieces: Bitfield
        var isSeed = false
        /// Pieces the peer has that we lack (non-seeds; a seed has all we lack).
        var interesting = 0
        var allowedFast: Set<Int> = []
        /// Blocks outstanding at this peer, as recorded in the block states.
        var requests: Set<BlockRequest> = []
        /// Sent a block of a piece that failed its hash: gets whole pieces to itself
        /// until one of them verifies, so that blame for the next failure is exact.
        var onParole = false
        /// Blocks it rejected or let time out, and until when not to ask it again.
        var avoid: [BlockRequest: UInt64] = [:]

        func avoids(_ block: BlockRequest, now: UInt64) -> Bool {
            guard let until = avoid[block] else { return false }
            return now < until
        }

        func has(_ piece: Int) -> Bool { isSeed || pieces[piece] }
    }

    public let layout: BlockLayout
    public let configuration: Configuration
    /// The effective `Configuration.partialPieceLimit`.
    public let partialPieceLimit: Int
    /// Verified pieces.
    public private(set) var have: Bitfield
    public private(set) var haveBytes: Int64 = 0

    /// Non-seed peers that have each piece; seeds are `seedCount`.
    private var availability: [Int32]
    private var seedCount = 0
    private var peers: [Peer: PeerEntry] = [:]
    private var partials: [Int: PartialPiece<Peer>] = [:]
    /// Pieces in `partials`, for the rarest-first scan.
    private var busy: Bitfield
    /// Pieces in `partials` with an open block: where `pick` looks first, without
    /// walking the pieces that are fully requested or waiting for their hash check.
    private var openPieces: Set<Int> = []
    /// Partial pieces that still lack a block (the rest wait for their hash check).
    public private(set) var inProgressCount = 0
    /// Open blocks summed over the partial pieces.
    private var openBlocks = 0
    /// Pieces we lack that nobody has been asked for.
    private var untouchedCount: Int

    public init(layout: BlockLayout, have: Bitfield, configuration: Configuration = Configuration()) {
        precondition(have.count == layout.pieceCount, "have bitfield does not match the layout")
        self.layout = layout
        self.configuration = configuration
        partialPieceLimit = max(1, configuration.partialPieceLimit ?? Configuration.defaultPartialPieceLimit(pieceLength: layout.pieceLength))
        self.have = have
        availability = Array(repeating: 0, count: layout.pieceCount)
        busy = Bitfield(count: layout.pieceCount)
        untouchedCount = layout.pieceCount - have.setCount
        for piece in 0..<layout.pieceCount where have[piece] { haveBytes += Int64(layout.length(ofPiece: piece)) }
    }

    // MARK: - State

    public var isComplete: Bool { have.isComplete }
    public var bytesLeft: Int64 { layout.totalLength - haveBytes }
    public var missingPieceCount: Int { layout.pieceCount - have.setCount }
    /// Every missing block is requested or received: `pick` now hands out duplicates.
    public var isEndGame: Bool { !isComplete && untouchedCount == 0 && openBlocks == 0 }

    /// Peers that have `piece` (seeds included).
    public func availability(ofPiece piece: Int) -> Int {
        guard piece >= 0, piece < layout.pieceCount else { return 0 }
        return Int(availability[piece]) + seedCount
    }

    public func peerHas(_ peer: Peer, piece: Int) -> Bool {
        guard piece >= 0, piece < layout.pieceCount, let entry = peers[peer] else { return false }
        return entry.has(piece)
    }

    /// Whether the peer has a piece we lack: send `interested` while this holds,
    /// `not_interested` once it stops. Maintained per peer, O(1).
    public func isInteresting(_ peer: Peer) -> Bool {
        guard let entry = peers[peer] else { return false }
        return entry.isSeed ? missingPieceCount > 0 : entry.interesting > 0
    }

    /// Whether a bitfield (of this torrent's size) has a piece we lack, without
    /// registering it anywhere.
    public func peerHasSomethingWeNeed(_ bitfield: Bitfield) -> Bool {
        guard bitfield.count == layout.pieceCount else { return false }
        for (theirs, ours) in zip(bitfield.bytes, have.bytes) where theirs & ~ours != 0 { return true }
        return false
    }

    /// Whether the peer is on parole (see `pieceFailed`).
    public func isOnParole(_ peer: Peer) -> Bool { peers[peer]?.onParole ?? false }

    /// Blocks outstanding at the peer.
    public func requests(of peer: Peer) -> Set<BlockRequest> { peers[peer]?.requests ?? [] }

    /// The state of one block; nil if the block is not one of ours. A block of a piece
    /// not in progress is `.open` (or, for a piece we have, nil).
    public func state(of block: BlockRequest) -> BlockState<Peer>? {
        guard let index = layout.blockIndex(of: block), !have[block.piece] else { return nil }
        return partials[block.piece]?.blocks[index] ?? .open
    }

    /// Pieces with per-block state (in progress or waiting for their hash check).
    public var partialPieces: [Int] { partials.keys.sorted() }

    // MARK: - What peers have (BEP 3 bitfield / have, BEP 6 have_all / have_none)

    /// The peer's bitfield. False (and nothing recorded) if its size is wrong. A second
    /// bitfield replaces the first.
    @discardableResult
    public mutating func peerBitfield(_ peer: Peer, _ bitfield: Bitfield) -> Bool {
        guard bitfield.count == layout.pieceCount else { return false }
        var entry = removePieces(of: peer)
        if bitfield.isComplete && layout.pieceCount > 0 {
            makeSeed(&entry)
        } else {
            entry.pieces = bitfield
            var interesting = 0
            for (byteIndex, byte) in bitfield.bytes.enumerated() where byte != 0 {
                interesting += (byte & ~have.bytes[byteIndex]).nonzeroBitCount
                var bits = byte
                while bits != 0 {
                    let bit = bits.leadingZeroBitCount
                    availability[byteIndex * 8 + bit] += 1
                    bits &= ~(0x80 >> UInt8(bit))
                }
            }
            entry.interesting = interesting
        }
        peers[peer] = entry
        return true
    }

    /// BEP 6 have_all: the peer is a seed.
    public mutating func peerHaveAll(_ peer: Peer) {
        var entry = removePieces(of: peer)
        makeSeed(&entry)
        peers[peer] = entry
    }

    /// BEP 6 have_none (or a peer that sent no bitfield): it has nothing yet.
    public mutating func peerHaveNone(_ peer: Peer) {
        peers[peer] = removePieces(of: peer)
    }

    /// A `have`. False if the index is out of range (a protocol error for the caller
    /// to act on); nothing is recorded then.
    @discardableResult
    public mutating func peerHave(_ peer: Peer, piece: Int) -> Bool {
        guard piece >= 0, piece < layout.pieceCount else { return false }
        var entry = peers.removeValue(forKey: peer) ?? PeerEntry(pieces: Bitfield(count: layout.pieceCount))
        defer { peers[peer] = entry }
        guard !entry.isSeed, !entry.pieces[piece] else { return true }
        entry.pieces[piece] = true
        availability[piece] += 1
        if !have[piece] { entry.interesting += 1 }
        if entry.pieces.isComplete {
            // Now a seed: cheaper to count than to keep a full bitfield.
            for index in availability.indices { availability[index] -= 1 }
            makeSeed(&entry)
        }
        return true
    }

    /// BEP 6 allowed_fast: the peer will serve this piece even while choking us. False
    /// if out of range. Past `allowedFastLimit` further pieces are ignored.
    @discardableResult
    public mutating func peerAllowedFast(_ peer: Peer, piece: Int) -> Bool {
        guard piece >= 0, piece < layout.pieceCount else { return false }
        var entry = peers.removeValue(forKey: peer) ?? PeerEntry(pieces: Bitfield(count: layout.pieceCount))
        if entry.allowedFast.count < configuration.allowedFastLimit { entry.allowedFast.insert(piece) }
        peers[peer] = entry
        return true
    }

    /// The peer rejected a request for an allowed-fast piece while choking us: it
    /// no longer serves it to us choked (BEP 6 lets the set shrink).
    public mutating func peerRevokedAllowedFast(_ peer: Peer, piece: Int) {
        peers[peer]?.allowedFast.remove(piece)
    }

    public func allowedFast(of peer: Peer) -> Set<Int> { peers[peer]?.allowedFast ?? [] }

    /// The peer disconnected: its requests go back to the pool and its pieces stop
    /// counting toward availability. Returns the requests that were released.
    @discardableResult
    public mutating func peerLeft(_ peer: Peer) -> [BlockRequest] {
        guard peers[peer] != nil else { return [] }
        let released = releaseAll(of: peer)
        let held = partials.compactMap { $0.value.exclusiveTo == peer ? $0.key : nil }
        for piece in held { partials[piece]?.exclusiveTo = nil }
        _ = removePieces(of: peer)
        peers[peer] = nil
        return released
    }

    /// The peer choked us. Without the fast extension that discards every request
    /// (BEP 3): they go back to the pool and are returned. With it (BEP 6) a choke
    /// cancels nothing: the peer must answer each request with the block or a
    /// `reject_request`, so nothing is released here (time-outs cover a peer that
    /// does neither).
    @discardableResult
    public mutating func peerChoked(_ peer: Peer, peerSupportsFast: Bool) -> [BlockRequest] {
        peerSupportsFast ? [] : releaseAll(of: peer)
    }

    // MARK: - Picking

    /// Up to `count` blocks to request from `peer` now, recorded as requested by it at
    /// `now`. While `peerChoking`, only blocks of the peer's allowed-fast pieces.
    public mutating func pick(for peer: Peer, count: Int, peerChoking: Bool = false, now: UInt64,
                              using random: inout some RandomNumberGenerator) -> [BlockRequest] {
        guard count > 0, !isComplete, var found = peers[peer] else { return [] }
        if peerChoking && found.allowedFast.isEmpty { return [] }
        // This copy is only read; dropping its share of the live request set spares a
        // copy of that set on the first insert below.
        found.requests = []
        let entry = found
        func allowed(_ piece: Int) -> Bool { entry.has(piece) && (!peerChoking || entry.allowedFast.contains(piece)) }
        /// A peer on parole shares no piece; nobody joins a piece a parole peer holds.
        func mayJoin(_ partial: PartialPiece<Peer>) -> Bool { mayJoin(exclusiveTo: partial.exclusiveTo) }
        func mayJoin(exclusiveTo: Peer?) -> Bool {
            entry.onParole ? exclusiveTo == peer : (exclusiveTo == nil || exclusiveTo == peer)
        }
        var picked: [BlockRequest] = []

        // 1. Finish what is started.
        var helpsPartials = false
        if openBlocks > 0 {
            var candidates: [(piece: Int, progress: Int)] = []
            for piece in openPieces where allowed(piece) {
                guard partials[piece] != nil, mayJoin(exclusiveTo: partials[piece]!.exclusiveTo) else { continue }
                candidates.append((piece, partials[piece]!.blocks.count - partials[piece]!.openCount))
            }
            if candidates.count > 1 {
                candidates.sort {
                    ($0.progress, -availability(ofPiece: $0.piece), -$0.piece) > ($1.progress, -availability(ofPiece: $1.piece), -$1.piece)
                }
            }
            helpsPartials = !candidates.isEmpty
            for candidate in candidates where picked.count < count {
                takeOpenBlocks(of: candidate.piece, for: peer, avoiding: entry, upTo: count, now: now, into: &picked)
            }
        }

        // 2. Rarest new pieces, within the partial-piece limit.
        if picked.count < count && untouchedCount > 0 {
            var startable = max(0, partialPieceLimit - inProgressCount)
            if startable == 0 && !helpsPartials && inProgressCount < 2 * partialPieceLimit {
                startable = 1  // a peer with none of the partial pieces must not starve
            }
            let blocksPerPiece = (layout.pieceLength + BlockLayout.blockLength - 1) / BlockLayout.blockLength
            let remaining = count - picked.count
            let wanted = min(startable, remaining / blocksPerPiece + (remaining % blocksPerPiece == 0 ? 0 : 1))
            if wanted > 0 {
                for piece in rarestPieces(for: entry, choked: peerChoking, count: wanted, using: &random) where picked.count < count {
                    partials[piece] = PartialPiece(blockCount: layout.blockCount(ofPiece: piece), exclusiveTo: entry.onParole ? peer : nil)
                    busy[piece] = true
                    openPieces.insert(piece)
                    untouchedCount -= 1
                    inProgressCount += 1
                    openBlocks += layout.blockCount(ofPiece: piece)
                    takeOpenBlocks(of: piece, for: peer, avoiding: entry, upTo: count, now: now, into: &picked)
                }
            }
        }

        // 3. End game: duplicate requests for blocks other peers are slow to deliver.
        if picked.count < count && isEndGame && othersHaveRequests(than: peer) {
            var candidates: [(block: BlockRequest, index: Int, requesters: Int, since: UInt64)] = []
            for (piece, partial) in partials where !partial.isFullyReceived && allowed(piece) && mayJoin(partial) {
                for (index, state) in partial.blocks.enumerated() {
                    guard case .requested(let requesters) = state, requesters.count < configuration.endGameRequestsPerBlock,
                          !requesters.contains(where: { $0.peer == peer }) else { continue }
                    let block = layout.block(index, ofPiece: piece)
                    guard !entry.avoids(block, now: now) else { continue }
                    candidates.append((block, index, requesters.count, requesters.first?.since ?? 0))
                }
            }
            candidates.sort { ($0.requesters, $0.since, $0.block.piece, $0.index) < ($1.requesters, $1.since, $1.block.piece, $1.index) }
            for candidate in candidates.prefix(count - picked.count) {
                addRequester(peer, to: candidate.block.piece, index: candidate.index, now: now)
                picked.append(candidate.block)
            }
        }
        return picked
    }

    /// Whether any other peer has a block outstanding: end game has nothing to
    /// duplicate otherwise (a lone peer), and its scan of every block is skipped.
    private func othersHaveRequests(than peer: Peer) -> Bool {
        for index in peers.indices where !peers.values[index].requests.isEmpty && peers.keys[index] != peer { return true }
        return false
    }

    private mutating func takeOpenBlocks(of piece: Int, for peer: Peer, avoiding entry: PeerEntry, upTo count: Int,
                                         now: UInt64, into picked: inout [BlockRequest]) {
        guard partials[piece] != nil, picked.count < count else { return }
        // One table update and one request-set update for the whole run of blocks; the
        // blocks share one requester list (copied on write if end game adds to it).
        let layout = self.layout
        let requester = [BlockRequester(peer: peer, since: now)]
        var taken: [BlockRequest] = []
        let wanted = count - picked.count
        updatePartial(piece) { partial in
            for index in partial.blocks.indices where taken.count < wanted {
                guard case .open = partial.blocks[index] else { continue }
                let block = layout.block(index, ofPiece: piece)
                guard !entry.avoids(block, now: now) else { continue }
                partial.set(index, .requested(requester))
                taken.append(block)
            }
        }
        guard !taken.isEmpty else { return }
        peers[peer]?.requests.formUnion(taken)
        picked += taken
    }

    /// Up to `count` untouched pieces the peer has, rarest first, ties in random order.
    private func rarestPieces(for entry: PeerEntry, choked: Bool, count: Int,
                              using random: inout some RandomNumberGenerator) -> [Int] {
        func eligible(_ piece: Int) -> Bool { !have[piece] && !busy[piece] && entry.has(piece) }
        if count == 1 && !choked {
            // One piece, the common case (a pipeline topping up): one pass for the
            // lowest availability and how many pieces share it, one random draw, and a
            // second pass to that tie. No allocation, no per-piece randomness.
            var lowest = Int32.max
            var ties = 0
            for piece in 0..<layout.pieceCount where eligible(piece) {
                let available = availability[piece]
                if available < lowest {
                    lowest = available
                    ties = 1
                } else if available == lowest {
                    ties += 1
                }
            }
            guard ties > 0 else { return [] }
            var skip = ties == 1 ? 0 : Int(random.next() % UInt64(ties))
            for piece in 0..<layout.pieceCount where eligible(piece) && availability[piece] == lowest {
                if skip == 0 { return [piece] }
                skip -= 1
            }
            return []
        }
        let pool: AnySequence<Int> = choked ? AnySequence(entry.allowedFast.sorted()) : AnySequence(0..<layout.pieceCount)
        var candidates: [(piece: Int, availability: Int, tieBreak: UInt64)] = []
        for piece in pool where eligible(piece) {
            candidates.append((piece, availability(ofPiece: piece), random.next()))
        }
        candidates.sort { ($0.availability, $0.tieBreak) < ($1.availability, $1.tieBreak) }
        return candidates.prefix(count).map(\.piece)
    }

    // MARK: - Events

    /// A block arrived from `peer`. Decides whether to keep it; see `BlockReceipt`.
    /// A block that was requested from the peer, or is still needed in a piece in
    /// progress (a late answer to a request that timed out), is accepted.
    public mutating func blockReceived(_ block: BlockRequest, from peer: Peer, now: UInt64) -> BlockReceipt {
        guard let index = layout.blockIndex(of: block) else { return .unexpected }
        peers[peer]?.requests.remove(block)
        if have[block.piece] { return .duplicate }
        guard let state = partials[block.piece]?.blocks[index] else { return .unexpected }
        var cancel: [Peer] = []
        switch state {
        case .received:
            return .duplicate
        case .open:
            break
        case .requested(let requesters):
            for requester in requesters where requester.peer != peer {
                peers[requester.peer]?.requests.remove(block)
                cancel.append(requester.peer)
            }
        }
        let completes = updatePartial(block.piece) { partial in
            partial.set(index, .received(from: peer))
            return partial.isFullyReceived
        }
        return .accepted(completesPiece: completes, cancel: cancel)
    }

    /// BEP 6 reject_request: the block goes back to the pool, for other peers first
    /// (`retryDelay`). False if it was not outstanding at the peer.
    @discardableResult
    public mutating func requestRejected(_ block: BlockRequest, by peer: Peer, now: UInt64) -> Bool {
        guard release(block, from: peer) else { return false }
        avoid(block, at: peer, now: now)
        return true
    }

    /// The request went unanswered too long (see `RequestPipeline`): the block goes
    /// back to the pool for another peer (`retryDelay`). A late arrival is still
    /// accepted.
    @discardableResult
    public mutating func requestTimedOut(_ block: BlockRequest, at peer: Peer, now: UInt64) -> Bool {
        guard release(block, from: peer) else { return false }
        avoid(block, at: peer, now: now)
        return true
    }

    /// We sent a `cancel` for it ourselves (other than end-game cancels, which
    /// `blockReceived` already settled).
    @discardableResult
    public mutating func requestCancelled(_ block: BlockRequest, at peer: Peer) -> Bool { release(block, from: peer) }

    /// The piece's hash matched: we have it. Returns the peers that no longer have
    /// anything we need (send them `not_interested`). Also for pieces found complete
    /// on disk while the download runs.
    public mutating func pieceVerified(_ piece: Int) -> [Peer] {
        guard piece >= 0, piece < layout.pieceCount, !have[piece] else { return [] }
        if let partial = partials[piece] {
            // A piece a parole peer downloaded alone passed: it is trusted again.
            if let owner = partial.exclusiveTo { peers[owner]?.onParole = false }
            _ = dropPartial(piece)
        } else {
            untouchedCount -= 1
        }
        have[piece] = true
        haveBytes += Int64(layout.length(ofPiece: piece))
        var bored: [Peer] = []
        for index in peers.indices {
            if peers.values[index].isSeed {
                if isComplete { bored.append(peers.keys[index]) }
            } else if peers.values[index].pieces[piece] {
                peers.values[index].interesting -= 1
                if peers.values[index].interesting == 0 { bored.append(peers.keys[index]) }
            }
        }
        return bored
    }

    /// The piece's hash did not match: every block is open again. Returns the peers
    /// that sent its blocks and those of them to strike (`HashStrikes`); nil if the
    /// piece was not in progress.
    public mutating func pieceFailed(_ piece: Int) -> HashFailure? {
        guard piece >= 0, piece < layout.pieceCount, !have[piece], let partial = partials[piece] else { return nil }
        let contributors = dropPartial(piece)
        untouchedCount += 1
        let blamed = contributors.filter { peer in
            peers[peer]?.onParole != true || partial.exclusiveTo == peer
        }
        // Parole (as libtorrent does): each contributor now downloads whole pieces on
        // its own, so an honest peer that shared a piece with a liar is not blamed
        // again, and the liar is blamed alone.
        for peer in contributors { peers[peer]?.onParole = true }
        return HashFailure(contributors: contributors, blamed: blamed)
    }

    // MARK: - Bookkeeping

    private mutating func updatePartial<R>(_ piece: Int, _ body: (inout PartialPiece<Peer>) -> R) -> R {
        let openBefore = partials[piece]!.openCount
        let fullBefore = partials[piece]!.isFullyReceived
        let result = body(&partials[piece]!)
        let openAfter = partials[piece]!.openCount
        openBlocks += openAfter - openBefore
        if (openBefore == 0) != (openAfter == 0) {
            if openAfter == 0 { openPieces.remove(piece) } else { openPieces.insert(piece) }
        }
        let fullAfter = partials[piece]!.isFullyReceived
        if fullBefore != fullAfter { inProgressCount += fullAfter ? -1 : 1 }
        return result
    }

    private mutating func addRequester(_ peer: Peer, to piece: Int, index: Int, now: UInt64) {
        updatePartial(piece) { partial in
            switch partial.blocks[index] {
            case .open: partial.set(index, .requested([BlockRequester(peer: peer, since: now)]))
            case .requested(let requesters): partial.set(index, .requested(requesters + [BlockRequester(peer: peer, since: now)]))
            case .received: break
            }
        }
        peers[peer]?.requests.insert(layout.block(index, ofPiece: piece))
    }

    private mutating func release(_ block: BlockRequest, from peer: Peer) -> Bool {
        guard peers[peer]?.requests.remove(block) != nil, let index = layout.blockIndex(of: block),
              case .requested(let requesters)? = partials[block.piece]?.blocks[index] else { return false }
        let remaining = requesters.filter { $0.peer != peer }
        updatePartial(block.piece) { partial in
            partial.set(index, remaining.isEmpty ? .open : .requested(remaining))
            // A parole peer that gives a block back (choke, reject, time-out, leaving)
            // no longer holds the piece to itself: others may finish it.
            if partial.exclusiveTo == peer { partial.exclusiveTo = nil }
        }
        return true
    }

    private mutating func avoid(_ block: BlockRequest, at peer: Peer, now: UInt64) {
        guard configuration.retryDelay > 0, configuration.retryMemory > 0, var entry = peers.removeValue(forKey: peer) else { return }
        if entry.avoid.count >= configuration.retryMemory {
            entry.avoid = entry.avoid.filter { now < $0.value }
            if entry.avoid.count >= configuration.retryMemory { entry.avoid.removeAll() }
        }
        let (until, overflow) = now.addingReportingOverflow(configuration.retryDelay)
        entry.avoid[block] = overflow ? .max : until
        peers[peer] = entry
    }

    private mutating func releaseAll(of peer: Peer) -> [BlockRequest] {
        guard let requests = peers[peer]?.requests, !requests.isEmpty else { return [] }
        let sorted = requests.sorted { ($0.piece, $0.offset) < ($1.piece, $1.offset) }
        for block in sorted { _ = release(block, from: peer) }
        peers[peer]?.requests.removeAll()
        return sorted
    }

    /// Removes a piece's block table, with any requests still recorded in it.
    private mutating func dropPartial(_ piece: Int) -> Set<Peer> {
        guard let partial = partials.removeValue(forKey: piece) else { return [] }
        for (index, state) in partial.blocks.enumerated() {
            guard case .requested(let requesters) = state else { continue }
            let block = layout.block(index, ofPiece: piece)
            for requester in requesters { peers[requester.peer]?.requests.remove(block) }
        }
        openBlocks -= partial.openCount
        openPieces.remove(piece)
        if !partial.isFullyReceived { inProgressCount -= 1 }
        busy[piece] = false
        return partial.contributors
    }

    /// Takes the peer's pieces out of availability; returns its entry emptied of them
    /// (requests and allowed-fast set kept).
    private mutating func removePieces(of peer: Peer) -> PeerEntry {
        guard var entry = peers.removeValue(forKey: peer) else { return PeerEntry(pieces: Bitfield(count: layout.pieceCount)) }
        if entry.isSeed {
            seedCount -= 1
        } else {
            for (byteIndex, byte) in entry.pieces.bytes.enumerated() where byte != 0 {
                var bits = byte
                while bits != 0 {
                    let bit = bits.leadingZeroBitCount
                    availability[byteIndex * 8 + bit] -= 1
                    bits &= ~(0x80 >> UInt8(bit))
                }
            }
        }
        entry.pieces = Bitfield(count: layout.pieceCount)
        entry.isSeed = false
        entry.interesting = 0
        return entry
    }

    private mutating func makeSeed(_ entry: inout PeerEntry) {
        entry.isSeed = true
        entry.pieces = Bitfield(count: 0)
        entry.interesting = 0
        seedCount += 1
    }
}

extension PiecePicker: Sendable where Peer: Sendable {}
extension PiecePicker.PeerEntry: Sendable where Peer: Sendable {}
extension PiecePicker.BlockReceipt: Sendable where Peer: Sendable {}
extension PiecePicker.HashFailure: Sendable where Peer: Sendable {}
