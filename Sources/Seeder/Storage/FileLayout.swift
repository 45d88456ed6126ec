import BitTorrent

/// Maps ranges of a torrent's byte stream onto its files.
public struct FileLayout: Sendable {
    public struct Segment: Equatable, Sendable {
        public let fileIndex: Int
        public let fileOffset: Int64
        public let length: Int
        /// Where this segment starts within the requested range.
        public let bufferOffset: Int
    }

    public let files: [TorrentFile]
    public let totalLength: Int64

    public init(files: [TorrentFile]) {
        self.files = files
        totalLength = files.last.map { $0.offset + $0.length } ?? 0
    }

    /// The file segments covering `length` bytes at `offset`, in order. Zero-length
    /// files never appear.
    public func segments(offset: Int64, length: Int) -> [Segment] {
        precondition(offset >= 0 && length >= 0 && offset + Int64(length) <= totalLength, "range outside the torrent")
        var result: [Segment] = []
        guard length > 0 else { return result }
        var index = firstFile(containing: offset)
        var position = offset
        let end = offset + Int64(length)
        while position < end {
            let file = files[index]
            let fileEnd = file.offset + file.length
            if file.length > 0 && position < fileEnd {
                let take = Int(min(fileEnd, end) - position)
                result.append(Segment(fileIndex: index, fileOffset: position - file.offset, length: take,
                                      bufferOffset: Int(position - offset)))
                position += Int64(take)
            }
            index += 1
        }
        return result
    }

    /// The indices of the pieces that hold some of file `fileIndex`'s bytes.
    public func pieces(ofFile fileIndex: Int, pieceLength: Int) -> Range<Int> {
        let file = files[fileIndex]
        guard file.length > 0 else { return 0..<0 }
        let first = Int(file.offset / Int64(pieceLength))
        let last = Int((file.offset + file.length - 1) / Int64(pieceLength))
        return first..<(last + 1)
    }

    /// Binary search for the first non-empty file whose range holds `offset`.
    private func firstFile(containing offset: Int64) -> Int {
        var low = 0
        var high = files.count - 1
        while low < high {
            let middle = (low + high) / 2
            if files[middle].offset + files[middle].length <= offset {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low
    }
}
