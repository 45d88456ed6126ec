/// The Prometheus text exposition format (version 0.0.4) of a status snapshot, for
/// `GET /metrics`.
enum PrometheusText {
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    static func render(_ status: StatusSnapshot) -> String {
        var out = Output()
        out.metric("seeder_uptime_seconds", "gauge", "Seconds since the server started.", [([], Double(status.uptime))])
        out.metric("seeder_uploaded_bytes_total", "counter", "Payload bytes sent to peers, by transport.",
                   status.uploadedByTransport.sorted { $0.key < $1.key }.map { ([("transport", $0.key)], Double($0.value)) })
        out.metric("seeder_downloaded_bytes_total", "counter", "Payload bytes received from peers, by transport.",
                   status.downloadedByTransport.sorted { $0.key < $1.key }.map { ([("transport", $0.key)], Double($0.value)) })
        out.metric("seeder_upload_rate_bytes", "gauge", "Upload rate over the last 10 s, bytes per second.",
                   [([], Double(status.transfer.uploadRate))])
        out.metric("seeder_download_rate_bytes", "gauge", "Download rate over the last 10 s, bytes per second.",
                   [([], Double(status.transfer.downloadRate))])
        out.metric("seeder_upload_limit_bytes", "gauge", "Global upload limit, bytes per second; 0 is unlimited.",
                   [([], Double(status.uploadLimit))])
        out.metric("seeder_download_limit_bytes", "gauge", "Global download limit, bytes per second; 0 is unlimited.",
                   [([], Double(status.downloadLimit))])
        out.metric("seeder_peers", "gauge", "Connected peers past the handshake, by transport.",
                   [([("transport", "tcp")], Double(status.peers.tcp)), ([("transport", "utp")], Double(status.peers.utp))])
        out.metric("seeder_blocks_served_total", "counter", "Blocks (piece messages) sent to peers.",
                   [([], Double(status.counters.blocksServed))])
        out.metric("seeder_hash_failures_total", "counter", "Downloaded pieces that failed their SHA-1 check.",
                   [([], Double(status.counters.hashFailures))])
        out.metric("seeder_peer_faults_total", "counter", "Peers disconnected for breaking the protocol.",
                   [([], Double(status.counters.peerFaults))])
        out.metric("seeder_announces_total", "counter", "Tracker announces, by result.",
                   [([("result", "success")], Double(status.counters.announcesSucceeded)),
                    ([("result", "failure")], Double(status.counters.announcesFailed))])
        out.metric("seeder_utp_retransmits_total", "counter", "uTP packets sent again after a loss or timeout.",
                   [([], Double(status.counters.utpRetransmits))])
        let socket = status.counters.utpSocket
        out.metric("seeder_utp_datagrams_received_total", "counter", "Datagrams the uTP socket received.",
                   [([], Double(socket.datagramsReceived))])
        out.metric("seeder_utp_datagrams_rejected_total", "counter",
                   "uTP datagrams that were not uTP (malformed) or for no connection of ours (stray).",
                   [([("reason", "malformed")], Double(socket.malformed)), ([("reason", "stray")], Double(socket.stray))])
        out.metric("seeder_utp_syns_total", "counter", "uTP SYNs received, and those refused with the connection table full.",
                   [([("result", "received")], Double(socket.synsReceived)), ([("result", "refused")], Double(socket.refused))])
        out.metric("seeder_utp_half_open_dropped_total", "counter", "Half-open uTP connections dropped, by cause.",
                   [([("reason", "evicted")], Double(socket.halfOpenEvicted)), ([("reason", "expired")], Double(socket.halfOpenExpired))])
        out.metric("seeder_utp_cookies_accepted_total", "counter",
                   "uTP connections accepted by their SYN cookie after their half-open entry was dropped.",
                   [([], Double(socket.cookiesAccepted))])
        var states: [String: Int] = ["queued": 0, "checking": 0, "downloading": 0, "seeding": 0, "error": 0]
        for torrent in status.torrents { states[torrent.state, default: 0] += 1 }
        out.metric("seeder_torrents", "gauge", "Torrents, by state.",
                   states.sorted { $0.key < $1.key }.map { ([("state", $0.key)], Double($0.value)) })

        func perTorrent(_ value: (StatusSnapshot.Torrent) -> Double) -> [([(String, String)], Double)] {
            status.torrents.map { ([("info_hash", $0.infoHash), ("name", $0.name)], value($0)) }
        }
        out.metric("seeder_torrent_uploaded_bytes_total", "counter", "Payload bytes sent, per torrent.",
                   perTorrent { Double($0.transfer.uploaded) })
        out.metric("seeder_torrent_upload_rate_bytes", "gauge", "Upload rate over the last 10 s, per torrent.",
                   perTorrent { Double($0.transfer.uploadRate) })
        out.metric("seeder_torrent_peers", "gauge", "Connected peers, per torrent.", perTorrent { Double($0.peers.total) })
        out.metric("seeder_torrent_progress_ratio", "gauge", "Share of pieces held and verified, per torrent.",
                   perTorrent { $0.progress })
        return out.text
    }

    private struct Output {
        var text = ""

        mutating func metric(_ name: String, _ type: String, _ help: String, _ samples: [([(String, String)], Double)]) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples {
                text += name
                if !labels.isEmpty {
                    text += "{" + labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
                }
                text += " \(format(value))\n"
            }
        }

        private func escape(_ value: String) -> String {
            var escaped = ""
            for character in value {
                switch character {
                case "\\": escaped += "\\\\"
                case "\"": escaped += "\\\""
                case "\n": escaped += "\\n"
                default: escaped.append(character)
                }
            }
            return escaped
        }

        private func format(_ value: Double) -> String {
            if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
            return "\(value)"
        }
    }
}
