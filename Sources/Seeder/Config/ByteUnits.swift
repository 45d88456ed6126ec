/// Sizes and rates as operators write them: `262144`, `256KiB`, `4 MiB`, `5MB/s`.
/// Binary prefixes (KiB, MiB, GiB) are powers of 1024, decimal ones (kB, MB, GB)
/// powers of 1000, as in `ls -h --si` and Transmission's kB/s.
public enum ByteUnits {
    private static let multipliers: [(suffix: String, factor: Int64)] = [
        ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40),
        ("k", 1000), ("kb", 1000), ("mb", 1_000_000), ("m", 1_000_000), ("gb", 1_000_000_000), ("g", 1_000_000_000),
        ("tb", 1_000_000_000_000), ("b", 1), ("", 1),
    ]

    /// Parses a byte count; nil when it is not a non-negative size.
    public static func parseSize(_ text: String) -> Int64? {
        let trimmed = text.trimmingWhitespace()
        var digitsEnd = trimmed.startIndex
        var sawDot = false
        while digitsEnd < trimmed.endIndex, trimmed[digitsEnd].isASCII,
              trimmed[digitsEnd].isNumber || (trimmed[digitsEnd] == "." && !sawDot) {
            if trimmed[digitsEnd] == "." { sawDot = true }
            digitsEnd = trimmed.index(after: digitsEnd)
        }
        let number = trimmed[..<digitsEnd]
        let suffix = trimmed[digitsEnd...].trimmingWhitespace().lowercased()
        guard !number.isEmpty, let factor = multipliers.first(where: { $0.suffix == suffix })?.factor else { return nil }
        if sawDot {
            guard let value = Double(number), value.isFinite else { return nil }
            let bytes = (value * Double(factor)).rounded()
            // 0 means unlimited (a rate) or automatic (the burst): a fraction of a byte
            // must not silently become either.
            guard bytes < 9.0e18, bytes >= 1 || value == 0 else { return nil }
            return Int64(bytes)
        }
        guard let value = Int64(number) else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: factor)
        return overflow ? nil : bytes
    }

    /// A rate in bits per second (`100Mbps`, `512kbps`): a lower-case b before `ps`.
    public static func isBitRate(_ text: String) -> Bool {
        text.trimmingWhitespace().hasSuffix("bps")
    }

    /// Parses a rate in bytes per second; `0` and `unlimited` mean no limit (0). `MBps`
    /// is bytes, but `Mbps` and `kbps` (a lower-case b) are bits, as line speeds are
    /// quoted: refused rather than read as eight times the limit meant.
    public static func parseRate(_ text: String) -> Int64? {
        let original = text.trimmingWhitespace()
        if isBitRate(original) { return nil }
        var trimmed = original.lowercased()
        if trimmed == "unlimited" { return 0 }
        if trimmed.hasSuffix("/s") { trimmed.removeLast(2) } else if trimmed.hasSuffix("ps") { trimmed.removeLast(2) }
        return parseSize(trimmed)
    }

    /// `1.5 GiB`, for people.
    public static func format(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) B" }
        return "\(formatDecimal(value, places: value < 10 ? 2 : 1)) \(units[unit])"
    }

    public static func formatRate(_ bytesPerSecond: Int64) -> String {
        bytesPerSecond == 0 ? "unlimited" : format(bytesPerSecond) + "/s"
    }

    static func formatDecimal(_ value: Double, places: Int) -> String {
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = Int64((value * scale).rounded())
        let whole = scaled / Int64(scale)
        var fraction = String(scaled % Int64(scale))
        while fraction.count < places { fraction = "0" + fraction }
        return places == 0 ? "\(whole)" : "\(whole).\(fraction)"
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text.removeFirst() }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }
}
