import BitTorrent
import EventLoop
import Logging

/// One peer over TCP or uTP: the handshake, then a PeerSession whose decisions it
/// carries out, with block reads on the disk pool. Loop-owned.
final class PeerConnection: PeerTransportDelegate, BandwidthClient {
    enum Phase {
        /// Incoming: waiting for the peer's handshake (48 bytes pick the torrent).
        case awaitingHandshake
        /// We sent our handshake and know the torrent; waiting for the peer's 20-byte id
        /// (incoming) or its whole handshake (outgoing).
        case awaitingPeerID(reserved: [UInt8])
        case awaitingConnect
        case active
        case closed
    }

    let id: Int
    let connection: PeerTransport
    let remote: SocketAddress
    let outgoing: Bool
    let openedAt: UInt64
    private unowned let server: PeerServer
    private(set) var phase: Phase
    private(set) var swarm: Swarm?
    private(set) var session: PeerSession?
    private(set) var peerID: [UInt8]?
    private var decoder: PeerMessageDecoder
    private var readsInFlight = 0
    /// Batches are numbered as they go to the disk and sent in that order: two disk
    /// threads can finish them the other way round, and libtorrent counts blocks that
    /// arrive ahead of earlier requests as skips, re-requesting them after enough.
    private var nextBatchNumber = 0
    private var nextBatchToSend = 0
    private var finishedBatches: [Int: PeerServer.BlockBatch] = [:]
    private(set) var uploaded: Int64 = 0
    var everReceived = false
    /// This peer's place under its torrent's and the global limits.
    private var bandwidth: BandwidthController.PeerHandle?
    /// Piece messages waiting for upload bandwidth, in the order they must go out.
    private var waiting: [OutputSegment] = []
    private var waitingBytes = 0
    /// Output not yet handed to the network: queued in the transport or waiting for
    /// upload bandwidth.
    private var unsentOutput: Int { connection.outputLength + waitingBytes }
    /// Upload bytes granted and not yet written.
    private var uploadCredit: Int64 = 0
    /// The download half, while our torrent misses pieces (see DownloadGuide).
    private(set) var download: PeerDownload<DownloadPeer>?
    private var random = SystemRandomNumberGenerator()
    /// Piece payload received from this peer.
    private(set) var downloaded: Int64 = 0
    /// Reading stopped until the download limits grant bytes again.
    private var readingPaused = false
    /// Reading stopped until the disk has written what the torrent received.
    private var diskPaused = false

    /// What a paused connection asks for to be woken: once granted, it is given back
    /// and reading resumes, each read being charged as it arrives (`consume`).
    static let downloadWakeUp: Int64 = 16 * 1024

    /// Part of a block batch's buffer: a `piece` header or a block's data.
    private struct OutputSegment {
        let buffer: OutgoingBuffer
        var range: Range<Int>
        /// Counts against the limits: block data always, headers with count_overhead.
        let counted: Bool
        let isPayload: Bool
        /// A message ends with this segment (a piece's data, or a control message).
        var endsMessage = true
        /// A control message queued behind a block cut short by the limits.
        var isControl = false
    }

    /// The last bytes written stopped inside a `piece` message (the upload limit cut a
    /// block short): control messages must wait until it is complete, or they would land
    /// inside its data.
    private var midMessage = false

    /// Block reads kept in flight per peer: enough to keep a fast link busy while the
    /// disk answers, few enough that a thousand peers cannot flood the disk queue.
    static let maxReadsInFlight = 64
    /// Blocks read in one disk job at most (256 KiB).
    static let maxBatch = 16
    /// While reads are in flight, wait for this many queued requests before starting
    /// another job: requests arrive a few at a time, and a job per request costs a
    /// thread hand-off each way.
    static let minBatch = 4
    /// Output queued plus blocks being read, at most, before we stop reading blocks for
    /// this peer.
    static let outputHighWatermark = 1 << 20
    /// Output a peer may leave unread before it is cut off: blocks stop at the high
    /// watermark, so only control messages it provoked (rejects) take a peer past this.
    static let maxUnreadOutput = 4 * outputHighWatermark

    init(id: Int, server: PeerServer, connection: PeerTransport, outgoingTo swarm: Swarm?, now: UInt64) {
        self.id = id
        self.server = server
        self.connection = connection
        remote = connection.remote
        outgoing = swarm != nil
        openedAt = now
        self.swarm = swarm
        phase = swarm != nil ? .awaitingConnect : .awaitingHandshake
        decoder = PeerMessageDecoder(maxMessageLength: PeerMessageDecoder.limit(pieceCount: swarm?.torrent.metainfo.pieceCount ?? 0))
        connection.delegate = self
    }

    var isHandshaking: Bool {
        switch phase {
        case .awaitingHandshake, .awaitingPeerID, .awaitingConnect: return true
        case .active, .closed: return false
        }
    }

    var isClosed: Bool {
        if case .closed = phase { return true }
        return false
    }

    // MARK: PeerTransportDelegate

    func transportConnected(_ transport: PeerTransport) {
        server.dialSucceeded(self)
        guard let swarm else { return }
        phase = .awaitingPeerID(reserved: [])
        connection.write(Handshake(reserved: Handshake.ourReserved, infoHash: swarm.torrent.infoHash, peerID: server.peerID).encoded())
    }

    func transportReadable(_ transport: PeerTransport) {
        let received = connection.read(into: &decoder, limit: readLimit())
        everReceived = true
        processInput()
        if case .active = phase, unsentOutput > Self.maxUnreadOutput {
            // Each request while choked earns a reject: a peer that sends them and never
            // reads would have us queue its rejects for as long as it keeps sending.
            return close("does not read: \(unsentOutput) bytes of output unsent", peerFault: true)
        }
        if received > 0 { chargeDownload(received) }
        if !diskPaused, case .active = phase, let torrentDownload = swarm?.download, torrentDownload.isBackedUp {
            diskPaused = true
            torrentDownload.noteBackedUp()
            connection.setReading(false)
        }
    }

    func transportWritable(_ transport: PeerTransport) {
        pumpReads()
    }

    func transportClosed(_ transport: PeerTransport, reason: String) {
        finish(reason: reason, peerFault: false)
    }

    // MARK: Input

    private func processInput() {
        let now = EventLoop.now()
        while true {
            switch phase {
            case .awaitingHandshake:
                guard !server.isBanned(remote.ip) else {
                    return close("banned: sent pieces that failed their hash check", peerFault: false)
                }
                guard decoder.bufferedByteCount >= Handshake.prefixLength else {
                    do { try Handshake.checkStart(decoder.peekRaw(20)) } catch {
                        return close("\(error)", peerFault: true)
                    }
                    return
                }
                let prefix = decoder.takeRaw(Handshake.prefixLength)!
                let parsed: (reserved: [UInt8], infoHash: InfoHash)
                do { parsed = try Handshake.parsePrefix(prefix) } catch {
                    return close("\(error)", peerFault: true)
                }
                guard let found = server.swarm(for: parsed.infoHash) else {
                    return close("handshake for unknown torrent \(parsed.infoHash)", peerFault: true)
                }
                guard server.attach(self, to: found) else {
                    return close("torrent \(found.torrent.name) is at its connection limit", peerFault: false)
                }
                swarm = found
                decoder.maxMessageLength = PeerMessageDecoder.limit(pieceCount: found.torrent.metainfo.pieceCount)
                connection.write(Handshake(reserved: Handshake.ourReserved, infoHash: found.torrent.infoHash, peerID: server.peerID).encoded())
                phase = .awaitingPeerID(reserved: parsed.reserved)
            case .awaitingPeerID(let reserved):
                guard let swarm else { return close("no torrent", peerFault: false) }
                var peerReserved = reserved
                if outgoing {
                    guard decoder.bufferedByteCount >= Handshake.length else { return }
                    let bytes = decoder.takeRaw(Handshake.length)!
                    let parsed: (reserved: [UInt8], infoHash: InfoHash)
                    do { parsed = try Handshake.parsePrefix(bytes) } catch {
                        return close("\(error)", peerFault: true)
                    }
                    guard parsed.infoHash == swarm.torrent.infoHash else {
                        return close("peer answered with another torrent", peerFault: true)
                    }
                    peerReserved = parsed.reserved
                    peerID = Array(bytes[48..<68])
                } else {
                    guard decoder.bufferedByteCount >= 20 else { return }
                    peerID = decoder.takeRaw(20)!
                }
                if peerID == server.peerID {
                    server.markSelf(remote, swarm: swarm)
                    return close("connected to ourselves", peerFault: false)
                }
                if outgoing && !server.attach(self, to: swarm) {
                    return close("torrent \(swarm.torrent.name) is at its connection limit", peerFault: false)
                }
                var session = PeerSession(configuration: server.sessionConfiguration, peerReserved: peerReserved, now: now)
                let outputs = session.start(torrent: swarm.view, yourIP: remote.ip, now: now)
                self.session = session
                phase = .active
                bandwidth = server.bandwidth.addPeer(to: swarm.bandwidth, client: self)
                if swarm.download != nil {
                    download = PeerDownload(peer: DownloadPeer(connection: id, ip: remote.ip), peerSupportsFast: session.peerSupportsFast, now: now)
                }
                swarm.peerActivated(self)
                server.logger.debug("peer connected", metadata: ["peer": "\(remote)", "torrent": "\(swarm.torrent.name)",
                                                                 "client": "\(PeerConnection.describe(peerID: peerID!))",
                                                                 "direction": "\(outgoing ? "out" : "in")"])
                guard perform(outputs) else { return }
            case .active:
                guard let swarm else { return }
                let message: PeerMessage?
                do { message = try decoder.next() } catch {
                    return close("\(error)", peerFault: true)
                }
                guard let message else {
                    pumpReads()
                    return
                }
                let wasInterested = session!.peerInterested
                let outputs = session!.receive(message, torrent: swarm.view, now: now)
                guard perform(outputs) else { return }
                if session!.peerInterested != wasInterested { swarm.interestChanged(self) }
                if case .piece(_, _, let data) = message {
                    downloaded += Int64(data.count)
                    swarm.downloaded(data.count)
                    server.downloaded(data.count, over: connection.kind)
                }
                guard receiveForDownload(message, swarm: swarm, now: now) else { return }
            case .awaitingConnect, .closed:
                return
            }
        }
    }

    /// Carries out a session's outputs; false once the connection closed.
    @discardableResult
    private func perform(_ outputs: [PeerSession.Output]) -> Bool {
        guard !outputs.isEmpty else { return true }
        var bytes: [UInt8] = []
        for output in outputs {
            switch output {
            case .send(let message):
                message.encode(into: &bytes)
            case .close(let reason):
                writeControl(bytes)
                close(reason.description, peerFault: reason.isPeerFault)
                return false
            }
        }
        writeControl(bytes)
        return true
    }

    /// Writes protocol messages (not block data): at once, unless a block the upload
    /// limit cut short is still going out, in which case they follow right after it.
    private func writeControl(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        guard midMessage, !waiting.isEmpty else {
            connection.write(bytes)
            return
        }
        let buffer = OutgoingBuffer(count: bytes.count)
        guard buffer.bytes.count == bytes.count else { return }
        bytes.withUnsafeBytes { buffer.bytes.copyMemory(from: $0) }
        // After the segment that ends the message in progress (a piece's data; its
        // header may itself be cut short), and after control messages already there.
        var index = (waiting.firstIndex { $0.endsMessage } ?? waiting.count - 1) + 1
        while index < waiting.count && waiting[index].isControl { index += 1 }
        waiting.insert(OutputSegment(buffer: buffer, range: 0..<bytes.count, counted: false, isPayload: false, isControl: true), at: index)
        waitingBytes += bytes.count
    }

    // MARK: Serving blocks

    /// Starts disk reads for queued requests while the socket has room, a batch of
    /// blocks per disk job.
    func pumpReads() {
        guard case .active = phase, let swarm else { return }
        while true {
            // Nothing asked of us (the common case while downloading from a seed): no
            // need to look at the output buffer.
            guard session!.queuedCount > 0 else { return }
            // Output waiting plus reads in flight stay under the high watermark, so a
            // slow peer holds about 1 MiB here however many requests it queues; a fast
            // one, whose output the kernel takes at once, gets all 64 reads.
            let budget = (Self.outputHighWatermark - unsentOutput) / (PeerMessage.pieceHeaderLength + BlockRequest.maxLength)
            let room = min(Self.maxBatch, Self.maxReadsInFlight - readsInFlight, budget - readsInFlight)
            guard room > 0 else { return }
            if readsInFlight > 0 && session!.queuedCount < min(Self.minBatch, room) { return }
            var batch: [BlockRequest] = []
            batch.reserveCapacity(min(room, session!.queuedCount))
            while batch.count < room, let block = session!.nextRequest() { batch.append(block) }
            guard !batch.isEmpty else { return }
            readsInFlight += batch.count
            server.readBlocks(batch, number: nextBatchNumber, storage: swarm.torrent.storage,
                              pieceLength: swarm.torrent.metainfo.pieceLength, for: self)
            nextBatchNumber += 1
        }
    }

    /// A batch of disk reads finished (on the loop): send it once every earlier batch
    /// has been sent.
    func blocksRead(_ batch: PeerServer.BlockBatch) {
        guard case .active = phase else { return }
        finishedBatches[batch.number] = batch
        while let next = finishedBatches.removeValue(forKey: nextBatchToSend) {
            nextBatchToSend += 1
            readsInFlight -= next.blocks.count
            guard send(next) else { return }
        }
        pumpReads()
    }

    /// Sends a batch's blocks (or rejects or drops those settled meanwhile); false once
    /// the connection closed.
    private func send(_ batch: PeerServer.BlockBatch) -> Bool {
        guard case .active = phase, let swarm else { return false }
        let now = EventLoop.now()
        var sendAll = batch.failures.isEmpty
        var dispositions: [PeerSession.BlockDisposition] = []
        dispositions.reserveCapacity(batch.blocks.count)
        for (index, block) in batch.blocks.enumerated() {
            if let failure = batch.failures.first(where: { $0.index == index }) {
                server.logger.error("cannot read \(block) of \(swarm.torrent.name): \(failure.error)")
                dispositions.append(.drop)
                guard perform(session!.blockReadFailed(block)) else { return false }
                continue
            }
            let disposition = session!.blockRead(block, now: now)
            if disposition != .send { sendAll = false }
            dispositions.append(disposition)
        }
        let sending = batch.blocks.indices.filter { dispositions[$0] == .send }
        guard !sending.isEmpty else { return true }
        server.servedBlocks(sending.count)
        let header = PeerMessage.pieceHeaderLength
        let payload = sending.reduce(0) { $0 + batch.blocks[$1].length }
        let counted = Int64(payload + (server.countOverhead ? header * sending.count : 0))
        let granted = bandwidth.map { server.bandwidth.request(.upload, $0, bytes: counted) } ?? counted
        if waiting.isEmpty && granted >= counted {
            // Nothing limits this peer now: the batch goes out whole, without a copy.
            if sendAll {
                connection.write(batch.buffer)
            } else {
                for index in sending { connection.write(batch.buffer, range: batch.offsets[index]..<batch.offsets[index + 1]) }
            }
            account(payload)
            return true
        }
        uploadCredit += granted
        for index in sending {
            let start = batch.offsets[index]
            waiting.append(OutputSegment(buffer: batch.buffer, range: start..<(start + header), counted: server.countOverhead, isPayload: false,
                                         endsMessage: false))
            waiting.append(OutputSegment(buffer: batch.buffer, range: (start + header)..<batch.offsets[index + 1], counted: true, isPayload: true))
            waitingBytes += batch.offsets[index + 1] - start
        }
        writeGranted()
        return true
    }

    /// Writes waiting output as far as the granted bandwidth reaches; a block may go out
    /// in several pieces, so the rate stays smooth below a block's size.
    private func writeGranted() {
        var written = 0
        var payload = 0
        var consumed = 0
        while consumed < waiting.count {
            let segment = waiting[consumed]
            var take = segment.range.count
            if segment.counted {
                guard uploadCredit > 0 else { break }
                take = min(take, Int(uploadCredit))
                uploadCredit -= Int64(take)
            }
            connection.write(segment.buffer, range: segment.range.lowerBound..<(segment.range.lowerBound + take))
            written += take
            midMessage = take < segment.range.count || !segment.endsMessage
            if segment.isPayload { payload += take }
            if take == segment.range.count {
                consumed += 1
            } else {
                waiting[consumed].range = (segment.range.lowerBound + take)..<segment.range.upperBound
                break
            }
        }
        waiting.removeFirst(consumed)
        waitingBytes -= written
        if payload > 0 { account(payload) }
    }

    private func account(_ payload: Int) {
        guard let swarm else { return }
        uploaded += Int64(payload)
        swarm.uploaded(payload)
        server.uploaded(payload)
    }

    // MARK: BandwidthClient

    func bandwidthGranted(_ direction: BandwidthController.Direction, bytes: Int64) {
        guard case .active = phase else { return }
        if direction == .download {
            resumeReading(granted: bytes)
            return
        }
        uploadCredit += bytes
        writeGranted()
        pumpReads()
    }

    // MARK: Control

    func setChoking(_ choke: Bool) {
        guard case .active = phase else { return }
        if perform(session!.setChoking(choke, now: EventLoop.now())) { pumpReads() }
    }

    /// Timeouts and keepalives, from the server's periodic tick.
    func tick(now: UInt64, handshakeTimeout: UInt64) {
        switch phase {
        case .awaitingHandshake, .awaitingPeerID, .awaitingConnect:
            if now - openedAt >= handshakeTimeout {
                close(isConnectPhase ? "connect timed out" : "no handshake within \(handshakeTimeout / 1_000_000) s", peerFault: false)
            }
        case .active:
            guard perform(session!.tick(now: now)) else { return }
            if download != nil, let torrentDownload = swarm?.download {
                let outputs = download!.tick(picker: &torrentDownload.picker, now: now, using: &random)
                carryOut(outputs, data: nil)
            }
        case .closed:
            break
        }
    }

    private var isConnectPhase: Bool {
        if case .awaitingConnect = phase { return true }
        return false
    }

    func close(_ reason: String, peerFault: Bool) {
        guard !isClosed else { return }
        connection.close()
        finish(reason: reason, peerFault: peerFault)
    }

    private func finish(reason: String, peerFault: Bool) {
        guard !isClosed else { return }
        let wasConnecting = isConnectPhase
        phase = .closed
        finishedBatches.removeAll()
        waiting.removeAll()
        waitingBytes = 0
        if download != nil, let torrentDownload = swarm?.download {
            download!.disconnected(picker: &torrentDownload.picker)
        }
        download = nil
        if let bandwidth {
            if uploadCredit > 0 { server.bandwidth.giveBack(.upload, bandwidth, bytes: uploadCredit) }
            if readingPaused { server.bandwidth.cancel(.download, bandwidth) }
            server.bandwidth.removePeer(bandwidth)
        }
        bandwidth = nil
        server.connectionClosed(self, reason: reason, peerFault: peerFault, wasConnecting: wasConnecting)
    }

    // MARK: Downloading

    /// Feeds a message to the download half; false once the connection closed.
    private func receiveForDownload(_ message: PeerMessage, swarm: Swarm, now: UInt64) -> Bool {
        guard download != nil, let torrentDownload = swarm.download else { return true }
        if case .extended(let id, _) = message, id == 0, let handshake = session!.peerExtensions {
            download!.extensionHandshake(handshake)
            return true
        }
        let outputs = download!.receive(message, picker: &torrentDownload.picker, now: now, using: &random)
        var data: [UInt8]?
        if case .piece(_, _, let bytes) = message { data = bytes }
        guard carryOut(outputs, data: data) else { return false }
        // A peer that keeps sending blocks nobody asked for is wasting our bandwidth.
        if download!.unexpectedBlocks > Self.maxUnexpectedBlocks {
            close("sent more than \(Self.maxUnexpectedBlocks) blocks we did not ask for", peerFault: true)
            return false
        }
        return true
    }

    static let maxUnexpectedBlocks = 200

    /// Carries out the download half's outputs; false once the connection closed.
    @discardableResult
    private func carryOut(_ outputs: [PeerDownload<DownloadPeer>.Output], data: [UInt8]?) -> Bool {
        guard !outputs.isEmpty, let swarm, let torrentDownload = swarm.download else { return true }
        var bytes: [UInt8] = []
        for output in outputs {
            switch output {
            case .send(let message):
                message.encode(into: &bytes)
            case .write(let block):
                if let data { torrentDownload.write(block, data: data) }
            case .verify(let piece):
                torrentDownload.verify(piece)
            case .cancel(let block, let other):
                swarm.peers[other.connection]?.cancelDownload(block)
            case .close(let reason):
                writeControl(bytes)
                close(reason.description, peerFault: reason.isPeerFault)
                return false
            }
        }
        if !bytes.isEmpty {
            writeControl(bytes)
            session?.sent(now: EventLoop.now())
        }
        return true
    }

    /// End game: another peer delivered a block this one also had outstanding.
    func cancelDownload(_ block: BlockRequest) {
        guard case .active = phase, download != nil, let torrentDownload = swarm?.download else { return }
        carryOut(download!.cancel(block, picker: &torrentDownload.picker, now: EventLoop.now(), using: &random), data: nil)
    }

    /// A downloaded piece passed its hash check: `have` to this peer, and our interest
    /// in it re-evaluated.
    func pieceVerified(_ piece: Int) {
        guard case .active = phase else { return }
        guard perform(session!.announce(piece: piece, now: EventLoop.now())) else { return }
        if download != nil, let torrentDownload = swarm?.download {
            carryOut(download!.updateInterest(picker: torrentDownload.picker), data: nil)
        }
    }

    /// The torrent is complete: no more download half, and a seed peer is let go.
    func torrentCompleted() {
        download = nil
        diskDrained()
        guard case .active = phase, let swarm else { return }
        perform(session!.torrentCompleted(torrent: swarm.view))
    }

    /// Under a download limit, a read takes about what the limits allow now (at least
    /// a block's worth, so a nearly empty bucket does not mean many tiny reads): each
    /// read is charged after the fact, and a read of 256 KiB against a 1 MiB/s limit
    /// would put a quarter second of debt into one instant.
    private func readLimit() -> Int {
        guard let bandwidth else { return Int.max }
        let allowance = server.bandwidth.allowance(.download, bandwidth)
        guard allowance < Int64(Int32.max) else { return Int.max }
        return Int(max(allowance, Self.downloadWakeUp))
    }

    /// Charges bytes read against the download limits; past the allowance, stops
    /// reading until the limits grant more.
    private func chargeDownload(_ bytes: Int) {
        guard case .active = phase, let bandwidth, !readingPaused else { return }
        server.bandwidth.consume(.download, bandwidth, bytes: Int64(bytes))
        guard server.bandwidth.allowance(.download, bandwidth) <= 0 else { return }
        readingPaused = true
        connection.setReading(false)
        let granted = server.bandwidth.request(.download, bandwidth, bytes: Self.downloadWakeUp)
        if granted > 0 { resumeReading(granted: granted) }
    }

    private func resumeReading(granted: Int64) {
        guard readingPaused, let bandwidth else {
            if let bandwidth, granted > 0 { server.bandwidth.giveBack(.download, bandwidth, bytes: granted) }
            return
        }
        readingPaused = false
        // The grant only wakes us: reads are charged as they arrive.
        if granted > 0 { server.bandwidth.giveBack(.download, bandwidth, bytes: granted) }
        if !diskPaused { connection.setReading(true) }
    }

    /// The torrent's disk writes caught up (or the download ended): read again.
    func diskDrained() {
        guard diskPaused else { return }
        diskPaused = false
        guard case .active = phase, !readingPaused else { return }
        connection.setReading(true)
    }

    static func describe(peerID: [UInt8]) -> String {
        let printable = peerID.prefix(8).map { (0x20...0x7E).contains($0) ? Character(Unicode.Scalar($0)) : "." }
        return String(printable)
    }
}
