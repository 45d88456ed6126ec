import Testing
@testable import BitTorrent

@Suite struct RequestPipelineTests {
    static func block(_ n: Int) -> BlockRequest { BlockRequest(piece: n / 4, offset: (n % 4) * 16384, length: 16384) }

    /// A peer that serves one block every 1/`blocksPerSecond` s, each at least
    /// `latency` after it was requested, with the pipeline topped up as it asks.
    static func serve(_ pipeline: inout RequestPipeline, blocksPerSecond: Int, latency: UInt64, seconds: Int,
                      from start: UInt64 = 0, next: inout Int) -> UInt64 {
        let step = 1_000_000 / UInt64(blocksPerSecond)
        var now = start
        let end = start + UInt64(seconds) * 1_000_000
        var lastTick = start
        while now < end {
            let room = pipeline.room
            pipeline.requested((0..<room).map { block(next + $0) }, now: now)
            next += room
            if let head = pipeline.outstanding.first, now - head.since >= latency {
                #expect(pipeline.received(head.block, now: now) == .expected)
            }
            if now - lastTick >= 1_000_000 {
                #expect(pipeline.tick(now: now).timedOut.isEmpty)
                lastTick = now
            }
            now += step
        }
        return now
    }

    @Test func slowStartGrowsTheDepthPerBlock() {
        var pipeline = RequestPipeline(now: 0)
        #expect(pipeline.depth == 4 && pipeline.room == 4)
        pipeline.requested((0..<4).map(Self.block), now: 0)
        #expect(pipeline.room == 0)
        for n in 0..<3 { _ = pipeline.received(Self.block(n), now: 50_000) }
        #expect(pipeline.depth == 7)
        #expect(pipeline.room == 6)
    }

    @Test func aDeepPipelineIsToppedUpInBatches() {
        // 2000 blocks/s wants 6000 requests; the peer's reqq holds the depth at 256.
        var pipeline = RequestPipeline(peerQueueLength: 256, now: 0)
        var next = 0
        _ = Self.serve(&pipeline, blocksPerSecond: 2000, latency: 10_000, seconds: 10, next: &next)
        let depth = pipeline.depth
        #expect(depth == 256)
        // Full: each block received frees a slot, but requests wait for a batch.
        let free = depth - pipeline.outstandingCount
        pipeline.requested((0..<free).map { Self.block(next + $0) }, now: 10_000_000)
        next += free
        #expect(pipeline.room == 0)
        let batch = min(pipeline.configuration.maximumBatch, depth / 8)
        for _ in 0..<(batch - 1) {
            let head = pipeline.outstanding.first!.block
            #expect(pipeline.received(head, now: 10_000_100) == .expected)
            #expect(pipeline.room == 0)
        }
        let head = pipeline.outstanding.first!.block
        #expect(pipeline.received(head, now: 10_000_100) == .expected)
        #expect(pipeline.room == batch)

        // A shallow pipeline is topped up per block.
        var shallow = RequestPipeline(now: 0)
        shallow.requested((0..<4).map(Self.block), now: 0)
        _ = shallow.received(Self.block(0), now: 1000)
        #expect(shallow.room == 2)  // slow start: depth 5, 3 outstanding
    }

    @Test func blocksAnsweredInAnyOrderOverManyRequests() {
        var pipeline = RequestPipeline(now: 0)
        let blocks = (0..<3000).map(Self.block)
        pipeline.requested(blocks, now: 0)
        // Mostly in order (the queue's head moves past its compaction point), some out
        // of order, one rejected.
        #expect(pipeline.received(blocks[5], now: 10) == .expected)
        let removed = pipeline.remove(blocks[7])
        #expect(removed)
        for block in blocks where block != blocks[5] && block != blocks[7] && block != blocks[2999] {
            #expect(pipeline.received(block, now: 20) == .expected)
        }
        #expect(pipeline.outstanding.map(\.block) == [blocks[2999]])
        #expect(pipeline.isOutstanding(blocks[2999]) && !pipeline.isOutstanding(blocks[0]))
        #expect(pipeline.received(blocks[7], now: 30) == .late)
        #expect(pipeline.received(blocks[5], now: 30) == .unrequested)
        #expect(pipeline.tick(now: 60_000_000).timedOut == [blocks[2999]])
        #expect(pipeline.outstanding.isEmpty && pipeline.outstandingCount == 0)
    }

    @Test func depthFollowsRateTimesQueueTime() {
        var pipeline = RequestPipeline(now: 0)
        var next = 0
        // 64 blocks/s = 1 MiB/s: 3 s of it is 192 blocks.
        _ = Self.serve(&pipeline, blocksPerSecond: 64, latency: 200_000, seconds: 30, next: &next)
        #expect(!pipeline.inSlowStart)
        #expect(abs(pipeline.downloadRate - (1 << 20)) < (1 << 20) / 10)
        #expect((170...200).contains(pipeline.depth), "depth \(pipeline.depth)")
        #expect(pipeline.smoothedLatency != nil)
    }

    @Test func depthIsCappedByTheSendersReqq() {
        var pipeline = RequestPipeline(peerQueueLength: 100, now: 0)
        var next = 0
        _ = Self.serve(&pipeline, blocksPerSecond: 64, latency: 200_000, seconds: 30, next: &next)
        #expect(pipeline.depth == 100)
        #expect(pipeline.outstanding.count <= 100)

        // 4 MiB/s wants 768 requests; without a reqq the cap is 250.
        var unknown = RequestPipeline(now: 0)
        next = 0
        _ = Self.serve(&unknown, blocksPerSecond: 256, latency: 100_000, seconds: 30, next: &next)
        #expect(unknown.depth == 250)
    }

    @Test func aSlowPeerGetsFewRequestsButTheMinimum() {
        var pipeline = RequestPipeline(now: 0)
        var next = 0
        // 16 KiB/s: 3 s of it is 3 blocks.
        _ = Self.serve(&pipeline, blocksPerSecond: 1, latency: 0, seconds: 30, next: &next)
        #expect(!pipeline.inSlowStart)
        #expect(pipeline.depth == 3)

        var configuration = RequestPipeline.Configuration()
        configuration.requestQueueTime = 1_000_000
        var short = RequestPipeline(configuration: configuration, now: 0)
        next = 0
        _ = Self.serve(&short, blocksPerSecond: 1, latency: 0, seconds: 30, next: &next)
        #expect(short.depth == 2, "one block's worth, raised to the minimum of 2")
    }

    @Test func timesOutAfterTheMinimumWithoutSamples() {
        var pipeline = RequestPipeline(now: 0)
        pipeline.requested([Self.block(0), Self.block(1)], now: 0)
        #expect(pipeline.tick(now: 19_999_999).timedOut.isEmpty)
        #expect(pipeline.tick(now: 20_000_000).timedOut == [Self.block(0), Self.block(1)])
        #expect(pipeline.outstanding.isEmpty)
        // The late answer is not held against the peer.
        #expect(pipeline.received(Self.block(0), now: 21_000_000) == .late)
        #expect(pipeline.received(Self.block(7), now: 21_000_000) == .unrequested)
    }

    @Test func timeoutScalesWithTheMeasuredRoundTrip() {
        var pipeline = RequestPipeline(now: 0)
        pipeline.requested([Self.block(0)], now: 0)
        #expect(pipeline.received(Self.block(0), now: 10_000_000) == .expected)
        // 10 s with a 5 s deviation: 4 x 15 s.
        #expect(pipeline.requestTimeout == 60_000_000)
        pipeline.requested([Self.block(1)], now: 10_000_000)
        #expect(pipeline.tick(now: 50_000_000).timedOut.isEmpty)
        #expect(pipeline.tick(now: 70_000_000).timedOut == [Self.block(1)])
    }

    @Test func snubsAPeerThatSendsNothingFor60Seconds() {
        var pipeline = RequestPipeline(now: 0)
        pipeline.requested([Self.block(0)], now: 0)
        #expect(pipeline.tick(now: 20_000_000).timedOut == [Self.block(0)])
        // Asking again does not restart the clock.
        pipeline.requested([Self.block(1)], now: 20_000_000)
        let before = pipeline.tick(now: 59_000_000)
        #expect(!before.becameSnubbed && before.timedOut == [Self.block(1)])
        pipeline.requested([Self.block(3)], now: 59_000_000)
        let result = pipeline.tick(now: 60_000_000)
        #expect(result.becameSnubbed && result.timedOut.isEmpty)
        #expect(pipeline.isSnubbed && pipeline.depth == 1)
        #expect(!pipeline.tick(now: 61_000_000).becameSnubbed, "reported once")
        pipeline.requested([Self.block(2)], now: 61_000_000)
        #expect(pipeline.received(Self.block(2), now: 62_000_000) == .expected)
        #expect(!pipeline.isSnubbed && pipeline.depth >= 2)
    }

    @Test func anIdlePeerIsNotSnubbed() {
        var pipeline = RequestPipeline(now: 0)
        #expect(!pipeline.tick(now: 1_000_000_000).becameSnubbed)
        // Requests sent after a long idle start the clock afresh.
        pipeline.requested([Self.block(0)], now: 1_000_000_000)
        #expect(!pipeline.tick(now: 1_019_000_000).becameSnubbed)
    }

    @Test func rejectsAndCancelsLeaveThePipeline() {
        var pipeline = RequestPipeline(now: 0)
        pipeline.requested((0..<4).map(Self.block), now: 0)
        #expect(pipeline.remove(Self.block(2)) == true)
        #expect(pipeline.remove(Self.block(2)) == false)
        #expect(pipeline.removeAll() == [Self.block(0), Self.block(1), Self.block(3)])
        #expect(pipeline.received(Self.block(3), now: 1) == .late)
    }

    @Test func releasedMemoryIsBounded() {
        var configuration = RequestPipeline.Configuration()
        configuration.releasedMemory = 4
        var pipeline = RequestPipeline(configuration: configuration, now: 0)
        for round in 0..<50 {
            pipeline.requested([Self.block(round)], now: 0)
            pipeline.remove(Self.block(round))
        }
        #expect(pipeline.received(Self.block(49), now: 1) == .late)
        #expect(pipeline.received(Self.block(45), now: 1) == .unrequested)
        #expect(pipeline.received(Self.block(0), now: 1) == .unrequested)
    }
}
