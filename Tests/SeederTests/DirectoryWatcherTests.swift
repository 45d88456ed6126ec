import Glibc
import Testing
@testable import EventLoop

@Suite struct DirectoryWatcherTests {
    /// Records as the kernel lays them out: header, then the name padded with NULs.
    func record(mask: Int32, name: String) -> [UInt8] {
        var name = Array(name.utf8)
        if !name.isEmpty { name += [UInt8](repeating: 0, count: 16 - name.count % 16) }
        var header = inotify_event()
        header.wd = 1
        header.mask = UInt32(mask)
        header.len = UInt32(name.count)
        return withUnsafeBytes(of: header) { Array($0) } + name
    }

    @Test func decodesAppearAndDisappear() {
        let bytes = record(mask: IN_CLOSE_WRITE, name: "a.torrent") + record(mask: IN_MOVED_FROM, name: "b.torrent")
            + record(mask: IN_MOVED_TO, name: "exactly-16-bytes") + record(mask: IN_Q_OVERFLOW, name: "")
            + record(mask: IN_DELETE_SELF, name: "")
        #expect(DirectoryWatcher.parse(bytes[...]) == [
            .appeared("a.torrent"), .disappeared("b.torrent"), .appeared("exactly-16-bytes"), .overflow, .directoryGone,
        ])
    }

    @Test func survivesATruncatedRecord() {
        let bytes = record(mask: IN_CLOSE_WRITE, name: "a.torrent")
        #expect(DirectoryWatcher.parse(bytes.dropLast(5)) == [.appeared("a.torrent")])
        #expect(DirectoryWatcher.parse(bytes.prefix(7)) == [])
    }
}
