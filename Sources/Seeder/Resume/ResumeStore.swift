import BitTorrent
import Glibc

/// Resume data on disk, one file per torrent under `state_dir/resume/`, and the
/// start-up plan it gives: which pieces can be taken as they were, which must be hashed.
/// Disk-pool threads only (it stats and reads files).
enum ResumeStore {
    /// What a start-up check does for one torrent.
    struct CheckPlan: Sendable {
        /// Pieces taken from resume data without hashing.
        var trusted: Bitfield
        /// Pieces to hash, in order.
        var pieces: [Int]
        /// The files as they are now, to be saved once the check is done.
        var stamps: [ResumeData.FileStamp]
        /// Why resume data was not used, if it was not.
        var note: String?
        var filesChanged: Int
    }

    static func directory(stateDirectory: String) -> String { stateDirectory + "/resume" }

    static func path(stateDirectory: String, infoHash: InfoHash) -> String {
        directory(stateDirectory: stateDirectory) + "/\(infoHash.hex).resume"
    }

    /// Each file's size and mtime now; padding files have nothing on disk.
    static func stamps(of metainfo: Metainfo, storage: TorrentStorage) -> [ResumeData.FileStamp] {
        metainfo.files.indices.map { index in
            guard !metainfo.files[index].isPadding else { return ResumeData.FileStamp(size: 0, modified: 0) }
            guard let status = storage.fileStatus(index) else { return .missing }
            return ResumeData.FileStamp(size: status.size, modified: status.modified)
        }
    }

    /// Stamps for resume data saved while a download writes to the files.
    static func writingStamps(of metainfo: Metainfo, storage: TorrentStorage) -> [ResumeData.FileStamp] {
        stamps(of: metainfo, storage: storage).map { stamp in
            stamp.size < 0 ? stamp : ResumeData.FileStamp(size: stamp.size, modified: ResumeData.FileStamp.writingMark)
        }
    }

    static func plan(metainfo: Metainfo, storage: TorrentStorage, stateDirectory: String) -> CheckPlan {
        let stamps = stamps(of: metainfo, storage: storage)
        let everything = CheckPlan(trusted: Bitfield(count: metainfo.pieceCount), pieces: Array(0..<metainfo.pieceCount),
                                   stamps: stamps, note: nil, filesChanged: 0)
        let file = path(stateDirectory: stateDirectory, infoHash: metainfo.infoHash)
        let bytes: [UInt8]
        switch Session.readFile(file) {
        case .success(let data): bytes = data
        case .failure:
            return everything  // first start: nothing to resume from
        }
        let resume: ResumeData
        do {
            resume = try ResumeData.decode(bytes, infoHash: metainfo.infoHash, pieceCount: metainfo.pieceCount, fileCount: metainfo.files.count)
        } catch {
            var plan = everything
            plan.note = "resume data \(file) unusable (\(error)), hashing everything"
            return plan
        }
        var recheck = [Bool](repeating: false, count: metainfo.pieceCount)
        var changed = 0
        for index in stamps.indices where stamps[index] != resume.files[index] {
            // Saved mid-download: our own writes moved the mtime since. The pieces it
            // records were on disk and verified when it was saved; the others are not
            // hashed but downloaded again.
            let saved = resume.files[index]
            if saved.isBeingWritten && stamps[index].size >= saved.size { continue }
            changed += 1
            for piece in storage.layout.pieces(ofFile: index, pieceLength: metainfo.pieceLength) { recheck[piece] = true }
        }
        var trusted = resume.have
        var pieces: [Int] = []
        for piece in 0..<metainfo.pieceCount where recheck[piece] {
            trusted[piece] = false
            pieces.append(piece)
        }
        return CheckPlan(trusted: trusted, pieces: pieces, stamps: stamps, note: nil, filesChanged: changed)
    }

    /// Writes atomically (temporary file, fsync, rename); nil on success, else why not.
    static func save(_ resume: ResumeData, stateDirectory: String) -> String? {
        let directory = directory(stateDirectory: stateDirectory)
        if let problem = Directories.ensure(directory) { return "\(directory): \(problem)" }
        return FileWriter.writeAtomically(resume.encoded(), to: path(stateDirectory: stateDirectory, infoHash: resume.infoHash))
    }

    static func remove(infoHash: InfoHash, stateDirectory: String) {
        unlink(path(stateDirectory: stateDirectory, infoHash: infoHash))
    }
}
