import SeededRandom

/// Seconds to the announcer's microseconds.
func seconds(_ value: UInt64) -> UInt64 { value * 1_000_000 }
