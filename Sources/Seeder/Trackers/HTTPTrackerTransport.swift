import EventLoop
import Trackers

/// Announces over HTTP(S) (BEP 3): the query from `HTTPAnnounce`, the GET from the
/// loop's `HTTPClient`, the body read back by `HTTPAnnounce`. Loop-owned.
final class HTTPTrackerTransport {
    private let client: HTTPClient
    /// Tracker responses are small; a compact list of 200 peers is 1.2 KB. Anything near
    /// this is a misconfigured URL pointing at a web page.
    static let maxBodySize = 1 << 20

    init(loop: EventLoop) {
        client = HTTPClient(loop: loop)
        client.userAgent = "Seeder/\(SeederVersion.string)"
    }

    /// Starts an announce; `completion` runs on a later loop turn unless the returned
    /// closure cancels it first.
    func announce(url: String, request: AnnounceRequest, timeoutSeconds: Int32,
                  completion: @escaping (Result<AnnounceResponse, TrackerError>) -> Void) -> () -> Void {
        let target = HTTPAnnounce.url(announceURL: url, request: request)
        let pending = client.get(target, timeoutSeconds: timeoutSeconds, maxBodySize: Self.maxBodySize) { result in
            switch result {
            case .success(let response) where response.status == 200:
                completion(HTTPAnnounce.parseResponse(response.body))
            case .success(let response):
                // Some trackers put a bencoded `failure reason` in a 4xx body: show it.
                if case .failure(let error) = HTTPAnnounce.parseResponse(response.body), case .failure = error {
                    completion(.failure(error))
                } else {
                    completion(.failure(.httpStatus(response.status)))
                }
            case .failure(.timedOut):
                completion(.failure(.transport("no answer within \(timeoutSeconds) s")))
            case .failure(let error):
                completion(.failure(.transport(error.description)))
            }
        }
        return { pending.cancel() }
    }
}
