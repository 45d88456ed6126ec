/// Tunables. Defaults follow protocol-notes.md (what libtorrent 2.0.8, libutp and
/// Transmission 3.00 expect of a peer).
public struct UTPConfiguration: Sendable {
    /// Receive buffer per connection; its free part is the advertised wnd_size.
    public var receiveBufferSize = 1 << 20
    /// Send buffer per connection; `write` accepts at most this much unacknowledged data.
    public var sendBufferSize = 1 << 20
    /// Transmission 3.00 drops packets beyond ~511 in flight, STATEs included.
    public var maxPacketsInFlight = 480
    public var minimumRTO: UInt64 = 500_000
    public var initialRTO: UInt64 = 1_000_000
    /// Consecutive retransmission timeouts before the connection is given up.
    public var maxTimeouts = 4
    /// SYN timeouts before a connect attempt fails (libtorrent falls back to TCP after 3 s).
    public var maxConnectTimeouts = 2
    /// libutp sends a keepalive after 29 s without sending.
    public var keepaliveInterval: UInt64 = 29_000_000
    /// When the peer's window stays zero this long with nothing in flight, send one
    /// packet anyway in case its window update was lost (libutp waits 15 s).
    public var zeroWindowProbeDelay: UInt64 = 5_000_000
    /// Accepted SYNs that have not yet sent DATA. The oldest is evicted when full.
    public var maxHalfOpen = 256
    public var halfOpenTimeout: UInt64 = 10_000_000
    /// Established connections; further SYNs are answered with RESET.
    public var maxConnections = 16_384
    /// RESETs sent for packets of unknown connections, per second.
    public var strayResetsPerSecond = 100
    /// Longest selective ack we send, in bytes (multiple of 4).
    public var maxSelectiveAckBytes = 64

    public init() {}
}
