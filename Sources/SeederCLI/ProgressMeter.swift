import Glibc
import Seeder

/// A one-line progress display on a terminal; silent when standard error is not one.
final class ProgressMeter {
    private let label: String
    private let interactive = isatty(2) == 1
    private let started = ProgressMeter.now()
    private var shown = false

    init(label: String) { self.label = label }

    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    func update(done: Int64, total: Int64) {
        guard interactive else { return }
        let elapsed = Self.now() - started
        let rate = elapsed > 0 ? Int64(Double(done) / elapsed) : 0
        let percent = total > 0 ? done * 100 / total : 100
        printRaw("\r\(label) \(percent)%  \(ByteUnits.format(done)) of \(ByteUnits.format(total))  \(ByteUnits.formatRate(rate))   ")
        shown = true
    }

    func finish() {
        if shown { printRaw("\n") }
        shown = false
    }

    private func printRaw(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    }
}
