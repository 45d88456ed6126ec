// The download core: how a torrent and its peer connections drive it.
//
// Pure pieces, no I/O (BEP 3 piece/block model, BEP 6 fast extension, BEP 10 reqq):
//   BlockLayout      pieces and 16 KiB blocks; matches a received block exactly.
//   PiecePicker      one per torrent: availability, interest, block states, picking
//                    (partial first, rarest first, end game), parole after hash failures.
//   RequestPipeline  one per peer: depth (rate x 3 s, slow start, reqq cap), time-outs,
//                    snubbing, rate. Owned by PeerDownload.
//   PeerDownload     one per peer: peer messages -> picker + pipeline -> Outputs.
//   HashStrikes      one per session (or torrent): strikes and bans by address.
//
// Key the picker by a `Peer` that is unique per connection and lets you reach the
// address (a struct of connection id and address works), because hash-failure blame
// names peers that may have disconnected since.
//
// Torrent start: `PiecePicker(layout: BlockLayout(metainfo:), have: resumeBitfield)`.
// Only when the picker is not complete do peers get a PeerDownload.
//
// Per connection, after the handshake:
//   download = PeerDownload(peer: key, peerSupportsFast: handshake.supportsFast, now:)
//   Feed every decoded message to both PeerSession (seed side) and
//   `download.receive(message, picker: &torrent.picker, now:, using: &rng)`; handle
//   its outputs:
//     .send(m)               write m to this peer (interested / not_interested /
//                            request / cancel).
//     .write(block)          the `piece` message just fed in is wanted: hand its data
//                            to the disk pool for block.piece at block.offset.
//     .verify(piece)         after that write completes, hash the piece (disk pool).
//     .cancel(block, at: p)  end game: call p's `download.cancel(block, picker:, now:,
//                            using:)` and handle its outputs (it sends the `cancel`).
//     .close(reason)         protocol error: close the connection (then disconnected).
//   What receive does with each message:
//     bitfield / have / have_all / have_none -> availability and interest; sends
//       `interested` when the peer has something we lack; requests if unchoked.
//     unchoke -> fills the pipeline with `request`s (pipeline.room blocks).
//     choke -> without fast: every request is void and goes back to the picker; with
//       fast: requests stay until the peer rejects or serves them; allowed-fast pieces
//       are still requested.
//     allowed_fast -> those pieces may be requested while choked (fast peers only).
//     reject_request -> the block goes back to the picker (not re-asked of this peer
//       for retryDelay); rejected while choked revokes that allowed-fast piece.
//     piece -> `.write`, maybe `.cancel`s and `.verify`; duplicates are dropped;
//       blocks never asked for count in `download.unexpectedBlocks` (disconnect a peer
//       that piles them up); then refills the pipeline.
//   BEP 10 extension handshake: `download.extensionHandshake(parsed)` (reqq caps the
//   pipeline).
//   Every second: `download.tick(picker:, now:, using:)`: times out requests (back to
//   the picker for other peers), snubs a silent peer (depth 1), refills from blocks
//   other peers released.
//   Disconnect: `download.disconnected(picker: &torrent.picker)`.
//
// Piece hash result (disk pool -> loop):
//   match:    `let bored = picker.pieceVerified(piece)`; send `have` to every peer
//             (PeerSession.announce); call `updateInterest(picker:)` on every
//             PeerDownload (sends not_interested to peers with nothing left for us).
//             When `picker.isComplete`: announce `completed`, drop the PeerDownloads
//             and seed (disconnect seeds, as PeerSession does).
//   mismatch: `if let failure = picker.pieceFailed(piece)`: map `failure.blamed` to
//             addresses, `strikes.pieceFailed(blamed:)`; disconnect and refuse every
//             newly banned address (check `strikes.isBanned` on accept and dial too).
//             The piece's blocks are open again; its contributors are on parole.
//
// Rates and throttling: the pipeline measures what arrives; the download throttle
// only delays reading the socket, which the measured rate and time-outs absorb.
