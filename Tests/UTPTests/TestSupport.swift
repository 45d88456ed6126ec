#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import UTP
import SeededRandom


/// Always the same value: forces ISNs and ids to a chosen corner (e.g. near 65535).
struct ConstantRNG: RandomNumberGenerator {
    var value: UInt64
    mutating func next() -> UInt64 { value }
}

/// The multiplexers' randomness in the simulation.
enum TestRNG: RandomNumberGenerator {
    case mix(SplitMix64)
    case constant(UInt64)
    mutating func next() -> UInt64 {
        switch self {
        case .mix(var g):
            let v = g.next()
            self = .mix(g)
            return v
        case .constant(let v):
            return v
        }
    }
}

/// One direction of a simulated path.
struct LinkModel {
    var delay: UInt64 = 5_000
    /// Extra uniform random delay; makes packets overtake each other.
    var jitter: UInt64 = 0
    var loss = 0.0
    var duplicate = 0.0
    /// Bottleneck rate; nil means unlimited.
    var bitsPerSecond: UInt64?
    var queueLimitBytes = Int.max
}

/// A min-heap of pending deliveries ordered by (time, sequence).
struct DeliveryHeap {
    struct Item {
        var time: UInt64
        var order: UInt64
        var to: Int
        var from: Int
        var bytes: [UInt8]
    }
    private var items: [Item] = []
    var count: Int { items.count }
    var first: Item? { items.first }

    private static func less(_ a: Item, _ b: Item) -> Bool { a.time != b.time ? a.time < b.time : a.order < b.order }

    mutating func push(_ item: Item) {
        items.append(item)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Self.less(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Item? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && Self.less(items[l], items[m]) { m = l }
            if r < items.count && Self.less(items[r], items[m]) { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}

/// A receiving host's UDP socket and the one thread reading it, as libtorrent's:
/// datagrams queue in a buffer of `capacity` (dropped beyond it, as the kernel does),
/// are read one at a time taking `perDatagram` each, and the acks go out only when a
/// read finds the socket empty (one deferred ack per drained batch).
struct SocketModel {
    var capacity: Int
    var perDatagram: UInt64
    var queue: [DeliveryHeap.Item] = []
    var head = 0
    var busyUntil: UInt64 = 0
    var inBatch = false
    var drops = 0
    var batches = 0
    /// The reader is descheduled for `stallFor` at the start of every `stallEvery`
    /// (another process took its core); the socket keeps filling meanwhile.
    var stallEvery: UInt64 = 0
    var stallFor: UInt64 = 0

    init(capacity: Int, perDatagram: UInt64) {
        self.capacity = capacity
        self.perDatagram = perDatagram
    }

    var queued: Int { queue.count - head }
    /// When the reader next does something, if it has anything to do.
    var nextEvent: UInt64? { queued > 0 || inBatch ? busyUntil : nil }
}

/// A deterministic in-memory network of multiplexers addressed by node number, with a
/// simulated clock. Datagrams arriving at the same instant form one receive batch,
/// unless the node has a `SocketModel`.
struct SimNetwork {
    var now: UInt64 = 1_000_000
    var nodes: [UTPMultiplexer<Int>] = []
    var rngs: [TestRNG] = []
    /// links[from][to]
    var links: [[LinkModel]] = []
    var linkBusyUntil: [[UInt64]] = []
    var heap = DeliveryHeap()
    var order: UInt64 = 0
    var netRNG: SplitMix64
    var batches: [UTPDatagramBatch<Int>] = []
    /// Queueing delay seen by each datagram entering a bottleneck, with its time.
    var queueDelays: [(time: UInt64, delay: UInt64)] = []
    var dropped = 0
    var delivered = 0
    /// Datagrams sent to a node with no multiplexer are counted here.
    var sinkDatagrams = 0
    var lastTick: [UInt64] = []
    /// Optional observer of every datagram put on the wire.
    var wireTap: ((Int, Int, [UInt8]) -> Void)?
    /// Optional observer of every datagram delivered (from, to, bytes, time).
    var deliveryTap: ((Int, Int, [UInt8], UInt64) -> Void)?
    /// Nodes whose socket is modelled (see `SocketModel`).
    var sockets: [SocketModel?] = []

    init(nodes count: Int, seed: UInt64 = 1, configuration: UTPConfiguration = UTPConfiguration(),
         packetSize: Int = 1402) {
        netRNG = SplitMix64(seed: seed)
        for i in 0 ..< count {
            nodes.append(UTPMultiplexer<Int>(configuration: configuration, packetSize: { _ in packetSize }))
            rngs.append(.mix(SplitMix64(seed: seed &* 31 &+ UInt64(i) &+ 7)))
            batches.append(UTPDatagramBatch())
            lastTick.append(0)
            sockets.append(nil)
        }
        links = Array(repeating: Array(repeating: LinkModel(), count: count + 1), count: count + 1)
        linkBusyUntil = Array(repeating: Array(repeating: 0, count: count + 1), count: count + 1)
    }

    mutating func setLink(_ from: Int, _ to: Int, _ model: LinkModel) { links[from][to] = model }
    mutating func setBothLinks(_ a: Int, _ b: Int, _ model: LinkModel) {
        links[a][b] = model
        links[b][a] = model
    }

    /// Puts a datagram on the wire from `from` to `to`, through the link model.
    mutating func send(_ bytes: [UInt8], from: Int, to: Int) {
        wireTap?(from, to, bytes)
        let link = links[from][to]
        if link.loss > 0 && netRNG.unit() < link.loss {
            dropped += 1
            return
        }
        var departure = now
        if let rate = link.bitsPerSecond {
            let busy = linkBusyUntil[from][to]
            let queued = busy > now ? busy - now : 0
            let queuedBytes = Int(queued * rate / 8_000_000)
            if queuedBytes + bytes.count > link.queueLimitBytes {
                dropped += 1
                return
            }
            if bytes.count > 100 { queueDelays.append((now, queued)) }
            let serialization = UInt64(bytes.count + 28) * 8 * 1_000_000 / rate
            departure = max(now, busy) + serialization
            linkBusyUntil[from][to] = departure
        }
        var arrival = departure + link.delay
        if link.jitter > 0 { arrival += netRNG.next() % link.jitter }
        order += 1
        heap.push(.init(time: arrival, order: order, to: to, from: from, bytes: bytes))
        if link.duplicate > 0 && netRNG.unit() < link.duplicate {
            order += 1
            heap.push(.init(time: arrival + 1 + netRNG.next() % 2_000, order: order, to: to, from: from, bytes: bytes))
        }
    }

    /// Moves every node's queued datagrams onto the wire.
    mutating func flush() {
        for i in nodes.indices {
            nodes[i].takeDatagrams(into: &batches[i])
            let batch = batches[i]
            for d in 0 ..< batch.count {
                let (to, bytes) = batch[d]
                send(bytes, from: i, to: to)
            }
        }
    }

    /// Delivers the next batch or runs the next timer, whichever comes first. Returns
    /// false when nothing at all is scheduled.
    mutating func step(appDeadline: UInt64? = nil) -> Bool {
        flush()
        var next = heap.first?.time
        if let a = appDeadline { next = min(next ?? a, a) }
        for i in nodes.indices {
            if var d = nodes[i].nextDeadline {
                if d <= lastTick[i] { d = lastTick[i] + 1_000 }
                next = min(next ?? d, d)
            }
            if let d = sockets[i]?.nextEvent { next = min(next ?? d, max(d, now)) }
        }
        guard let target = next else { return false }
        if target > now { now = target }
        var touched = Array(repeating: false, count: nodes.count)
        while let top = heap.first, top.time <= now {
            let item = heap.pop()!
            guard item.to < nodes.count else {
                sinkDatagrams += 1
                continue
            }
            if sockets[item.to] != nil {
                if sockets[item.to]!.queued >= sockets[item.to]!.capacity {
                    sockets[item.to]!.drops += 1
                } else {
                    sockets[item.to]!.queue.append(item)
                }
                continue
            }
            delivered += 1
            deliveryTap?(item.from, item.to, item.bytes, now)
            nodes[item.to].receive(item.bytes, from: item.from, now: now, rng: &rngs[item.to])
            touched[item.to] = true
        }
        for i in nodes.indices where touched[i] { nodes[i].endOfBatch(now: now) }
        for i in nodes.indices where sockets[i] != nil && sockets[i]!.busyUntil <= now {
            if let s = sockets[i], s.stallEvery > 0, now % s.stallEvery < s.stallFor {
                sockets[i]!.busyUntil = now - now % s.stallEvery + s.stallFor
            } else if sockets[i]!.queued > 0 {
                let item = sockets[i]!.queue[sockets[i]!.head]
                sockets[i]!.head += 1
                if sockets[i]!.head > 4096 {
                    sockets[i]!.queue.removeFirst(sockets[i]!.head)
                    sockets[i]!.head = 0
                }
                sockets[i]!.busyUntil = now + sockets[i]!.perDatagram
                sockets[i]!.inBatch = true
                delivered += 1
                deliveryTap?(item.from, item.to, item.bytes, now)
                nodes[i].receive(item.bytes, from: item.from, now: now, rng: &rngs[i])
            } else if sockets[i]!.inBatch {
                sockets[i]!.inBatch = false
                sockets[i]!.batches += 1
                nodes[i].endOfBatch(now: now)
            }
        }
        for i in nodes.indices {
            if let d = nodes[i].nextDeadline, d <= now, lastTick[i] != now {
                lastTick[i] = now
                nodes[i].tick(now: now)
            }
        }
        flush()
        return true
    }

    /// Injects a datagram as if it came from `from`, delivered at once (spoofing).
    mutating func inject(_ bytes: [UInt8], from: Int, to: Int) {
        nodes[to].receive(bytes, from: from, now: now, rng: &rngs[to])
        nodes[to].endOfBatch(now: now)
    }
}

/// Deterministic test data: the stream is this table repeated. Its length is prime,
/// so a misplaced packet never lands on identical bytes.
let patternTable: [UInt8] = {
    var g = SplitMix64(seed: 0xC0FFEE)
    var table: [UInt8] = []
    table.reserveCapacity(1_000_003)
    while table.count < 1_000_003 {
        let v = g.next()
        for k in 0 ..< 8 where table.count < 1_000_003 { table.append(UInt8(truncatingIfNeeded: v >> UInt64(k * 8))) }
    }
    return table
}()

/// Appends stream bytes `offset ..< offset + count` to `out`.
func appendPattern(from offset: Int, count: Int, to out: inout [UInt8]) {
    var offset = offset
    var remaining = count
    while remaining > 0 {
        let start = offset % patternTable.count
        let n = min(remaining, patternTable.count - start)
        out.append(contentsOf: patternTable[start ..< start + n])
        offset += n
        remaining -= n
    }
}

/// Whether `bytes` equal the stream at `offset`.
func matchesPattern(_ bytes: [UInt8], at offset: Int) -> Bool {
    var expected: [UInt8] = []
    expected.reserveCapacity(bytes.count)
    appendPattern(from: offset, count: bytes.count, to: &expected)
    return bytes.withUnsafeBytes { a in expected.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 } }
}

/// A client (node 0) connects to a server (node 1), says hello, and the server sends
/// `size` bytes of pattern then closes; the client verifies every byte.
struct TransferHarness {
    var net: SimNetwork
    let size: Int
    let hello: [UInt8] = Array("BitTorrent protocol hello".utf8)
    var client: UTPConnectionID?
    var server: UTPConnectionID?
    var serverSent = 0
    var serverClosed = false
    var clientReceived = 0
    var helloReceived: [UInt8] = []
    var mismatch: Int?
    var clientEvents: [UTPEvent<Int>] = []
    var serverEvents: [UTPEvent<Int>] = []
    var clientCloseReason: UTPCloseReason?
    var serverCloseReason: UTPCloseReason?
    var clientEOF = false
    /// Largest number of packets the server had in flight.
    var maxServerPacketsInFlight = 0
    /// The server connection's counters as last seen (they go with the connection).
    var lastServerStats = UTPConnectionStats()
    /// Client read budget per `readInterval` (nil: read everything at once).
    var readBudget: Int?
    var readInterval: UInt64 = 100_000
    var nextReadAt: UInt64 = 0
    var appDeadline: UInt64? { readBudget == nil ? nil : nextReadAt }
    private var scratch: [UInt8] = []
    private var chunk: [UInt8] = []

    init(net: SimNetwork, size: Int) {
        self.net = net
        self.size = size
    }

    mutating func start() {
        client = net.nodes[0].connect(to: 1, now: net.now, rng: &net.rngs[0])
    }

    var done: Bool { clientEOF && clientReceived == size }

    /// Application side of both nodes: react to events, move data.
    mutating func applications() {
        let now = net.now
        for event in net.nodes[0].takeEvents() {
            clientEvents.append(event)
            switch event {
            case .connected(let id):
                _ = net.nodes[0].write(id, hello, now: now)
            case .closed(_, let reason):
                clientCloseReason = reason
            default: break
            }
        }
        if let client, readBudget == nil || now >= nextReadAt {
            if readBudget != nil { nextReadAt = now + readInterval }
            scratch.removeAll(keepingCapacity: true)
            let n = net.nodes[0].read(client, maxBytes: readBudget ?? Int.max, into: &scratch, now: now)
            if n > 0 {
                if mismatch == nil && !matchesPattern(scratch, at: clientReceived) { mismatch = clientReceived }
                clientReceived += n
            }
            if net.nodes[0].isAtEndOfStream(client) && net.nodes[0].readableBytes(client) == 0 && clientReceived == size {
                clientEOF = true
            }
        }
        for event in net.nodes[1].takeEvents() {
            serverEvents.append(event)
            switch event {
            case .accepted(let id, _):
                server = id
            case .closed(_, let reason):
                serverCloseReason = reason
            default: break
            }
        }
        if let server {
            if let stats = net.nodes[1].stats(of: server) {
                lastServerStats = stats
                maxServerPacketsInFlight = max(maxServerPacketsInFlight, stats.packetsInFlight)
            }
            if helloReceived.count < hello.count {
                scratch.removeAll(keepingCapacity: true)
                _ = net.nodes[1].read(server, maxBytes: 1 << 20, into: &scratch, now: now)
                helloReceived += scratch
            }
            while serverSent < size {
                let n = min(64 * 1024, size - serverSent)
                chunk.removeAll(keepingCapacity: true)
                appendPattern(from: serverSent, count: n, to: &chunk)
                let taken = net.nodes[1].write(server, chunk, now: now)
                serverSent += taken
                if taken < n { break }
            }
            if serverSent == size && !serverClosed {
                serverClosed = true
                net.nodes[1].close(server, now: now)
            }
        }
    }

    /// Runs until the client has every byte and EOF, or `limit` simulated microseconds pass.
    mutating func run(limit: UInt64 = 600_000_000) {
        let end = net.now + limit
        start()
        net.flush()
        while !done && net.now < end {
            applications()
            guard net.step(appDeadline: appDeadline) else { break }
            if mismatch != nil { break }
        }
        // Let the closing handshake finish.
        let settle = net.now + 5_000_000
        while net.now < settle {
            applications()
            guard net.step(appDeadline: appDeadline) else { break }
            if clientCloseReason != nil && serverCloseReason != nil { break }
        }
        applications()
    }
}
