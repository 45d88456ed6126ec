import CLibevent
import Glibc

/// Why an HTTP request produced no response.
public enum HTTPError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidURL(String)
    case unsupportedScheme(String)
    case failed(String)
    case timedOut
    case tooLarge(limit: Int)
    case cancelled

    public var description: String {
        switch self {
        case .invalidURL(let url): return "invalid URL \(url)"
        case .unsupportedScheme(let scheme): return "unsupported URL scheme \(scheme)"
        case .failed(let why): return why
        case .timedOut: return "timed out"
        case .tooLarge(let limit): return "response larger than \(limit) bytes"
        case .cancelled: return "cancelled"
        }
    }
}

public struct HTTPResponse: Sendable {
    public let status: Int
    public let body: [UInt8]
}

/// GET requests over HTTP and HTTPS (libevent's evhttp), resolving names with evdns so
/// the loop never blocks. HTTPS checks the certificate chain against the system CAs and
/// the name against the host. Loop thread only.
public final class HTTPClient {
    private unowned let loop: EventLoop
    private let dns: OpaquePointer
    private var tls: OpaquePointer?
    private var active: [ObjectIdentifier: HTTPRequest] = [:]
    public var userAgent = "Seeder"

    public init(loop: EventLoop) {
        self.loop = loop
        dns = evdns_base_new(loop.base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE)
            ?? evdns_base_new(loop.base, 0)
    }

    deinit {
        for request in active.values { request.cancel() }
        evdns_base_free(dns, 0)
        if let tls { SSL_CTX_free(tls) }
    }

    /// Requests in flight.
    public var activeCount: Int { active.count }

    /// Starts a GET; `completion` runs on the loop exactly once, unless cancelled.
    @discardableResult
    public func get(_ url: String, timeoutSeconds: Int32, maxBodySize: Int = 1 << 20,
                    completion: @escaping (Result<HTTPResponse, HTTPError>) -> Void) -> HTTPRequest {
        let request = HTTPRequest(client: self, completion: completion)
        active[ObjectIdentifier(request)] = request
        request.start(url: url, timeoutSeconds: timeoutSeconds, maxBodySize: maxBodySize)
        return request
    }

    func finished(_ request: HTTPRequest) {
        active[ObjectIdentifier(request)] = nil
    }

    var base: OpaquePointer { loop.base }
    var dnsBase: OpaquePointer { dns }
    var eventLoop: EventLoop { loop }

    func tlsContext() -> OpaquePointer? {
        if let tls { return tls }
        guard let context = SSL_CTX_new(TLS_client_method()) else { return nil }
        SSL_CTX_set_default_verify_paths(context)
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        tls = context
        return context
    }
}

/// One GET in flight.
public final class HTTPRequest {
    private unowned let client: HTTPClient
    private var completion: ((Result<HTTPResponse, HTTPError>) -> Void)?
    private var connection: OpaquePointer?
    private var request: OpaquePointer?
    private var bev: OpaquePointer?
    private var failure: HTTPError?
    private var maxBodySize = 0
    private var cleanup: Timer?
    /// libevent's timeout is an idle timeout, re-armed by every byte: a server that
    /// trickles its answer would never trip it. This bounds the request as a whole.
    private var deadline: Timer?

    init(client: HTTPClient, completion: @escaping (Result<HTTPResponse, HTTPError>) -> Void) {
        self.client = client
        self.completion = completion
    }

    func start(url: String, timeoutSeconds: Int32, maxBodySize: Int) {
        self.maxBodySize = maxBodySize
        guard let uri = evhttp_uri_parse(url) else { return finishSoon(.failure(.invalidURL(url))) }
        defer { evhttp_uri_free(uri) }
        guard let schemePointer = evhttp_uri_get_scheme(uri), let hostPointer = evhttp_uri_get_host(uri) else {
            return finishSoon(.failure(.invalidURL(url)))
        }
        let scheme = String(cString: schemePointer).lowercased()
        var host = String(cString: hostPointer)
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return finishSoon(.failure(.invalidURL(url))) }
        let secure: Bool
        switch scheme {
        case "http": secure = false
        case "https": secure = true
        default: return finishSoon(.failure(.unsupportedScheme(scheme)))
        }
        var port = evhttp_uri_get_port(uri)
        if port < 0 { port = secure ? 443 : 80 }
        var target = evhttp_uri_get_path(uri).map { String(cString: $0) } ?? "/"
        if target.isEmpty { target = "/" }
        if let query = evhttp_uri_get_query(uri) { target += "?" + String(cString: query) }

        if secure {
            guard let context = client.tlsContext(), let ssl = SSL_new(context) else {
                return finishSoon(.failure(.failed("TLS is unavailable")))
            }
            SSL_set1_host(ssl, host)
            _ = seeder_ssl_set_sni(ssl, host)
            bev = bufferevent_openssl_socket_new(client.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                 Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue))
            guard let bev else { return finishSoon(.failure(.failed("TLS is unavailable"))) }
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1)
        }
        connection = evhttp_connection_base_bufferevent_new(client.base, client.dnsBase, bev, host, UInt16(port))
        guard let connection else { return finishSoon(.failure(.failed("cannot create a connection to \(host)"))) }
        evhttp_connection_set_timeout(connection, timeoutSeconds)
        deadline = Timer(loop: client.eventLoop, after: Int64(max(timeoutSeconds, 1)) * 1_000_000) { [unowned self] in
            self.finishSoon(.failure(.timedOut))
        }
        evhttp_connection_set_retries(connection, 0)
        evhttp_connection_set_max_body_size(connection, Int(maxBodySize))
        evhttp_connection_set_max_headers_size(connection, 64 << 10)

        let context = Unmanaged.passUnretained(self).toOpaque()
        request = evhttp_request_new({ request, context in
            Unmanaged<HTTPRequest>.fromOpaque(context!).takeUnretainedValue().done(request)
        }, context)
        guard let request else { return finishSoon(.failure(.failed("cannot create a request"))) }
        evhttp_request_set_error_cb(request, { error, context in
            Unmanaged<HTTPRequest>.fromOpaque(context!).takeUnretainedValue().errored(error)
        })
        let headers = evhttp_request_get_output_headers(request)
        evhttp_add_header(headers, "Host", port == (secure ? 443 : 80) ? host : "\(host):\(port)")
        evhttp_add_header(headers, "User-Agent", client.userAgent)
        evhttp_add_header(headers, "Accept-Encoding", "identity")
        evhttp_add_header(headers, "Connection", "close")
        if evhttp_make_request(connection, request, EVHTTP_REQ_GET, target) != 0 {
            // libevent frees the request itself when making it fails.
            self.request = nil
            finishSoon(.failure(.failed("cannot send the request to \(host)")))
        }
    }

    private func errored(_ error: evhttp_request_error) {
        switch error {
        case EVREQ_HTTP_TIMEOUT: failure = .timedOut
        case EVREQ_HTTP_DATA_TOO_LONG: failure = .tooLarge(limit: maxBodySize)
        case EVREQ_HTTP_EOF: failure = .failed(tlsError() ?? "connection closed before a response")
        case EVREQ_HTTP_INVALID_HEADER: failure = .failed("invalid HTTP response")
        case EVREQ_HTTP_BUFFER_ERROR: failure = .failed(tlsError() ?? "connection failed")
        case EVREQ_HTTP_REQUEST_CANCEL: failure = .cancelled
        default: failure = .failed("request failed")
        }
    }

    private func tlsError() -> String? {
        guard let bev else { return nil }
        let code = bufferevent_get_openssl_error(bev)
        guard code != 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return "TLS: " + buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    private func done(_ finished: OpaquePointer?) {
        // libevent frees the request after this callback returns.
        request = nil
        guard let finished, evhttp_request_get_response_code(finished) > 0 else {
            return finishSoon(.failure(failure ?? .failed(tlsError() ?? "connection failed")))
        }
        let status = Int(evhttp_request_get_response_code(finished))
        let input = evhttp_request_get_input_buffer(finished)
        let length = evbuffer_get_length(input)
        var body = [UInt8](repeating: 0, count: length)
        if length > 0 { _ = body.withUnsafeMutableBytes { evbuffer_remove(input, $0.baseAddress, length) } }
        finishSoon(.success(HTTPResponse(status: status, body: body)))
    }

    /// Delivers the result on a fresh loop turn: the connection may not be freed from
    /// inside its own callback.
    private func finishSoon(_ result: Result<HTTPResponse, HTTPError>) {
        guard cleanup == nil else { return }
        cleanup = Timer(loop: client.eventLoop, after: 0) { [unowned self] in
            self.deadline = nil
            self.releaseConnection()
            let completion = self.completion
            self.completion = nil
            let client = self.client
            client.finished(self)  // the client's table held the last reference: self may be gone now
            completion?(result)
        }
    }

    private func releaseConnection() {
        if let connection { evhttp_connection_free(connection) }  // frees bev and a pending request
        connection = nil
        request = nil
        bev = nil
    }

    /// Abandons the request; its completion never runs.
    public func cancel() {
        completion = nil
        cleanup?.cancel()
        deadline = nil
        if let request, connection != nil { evhttp_cancel_request(request) }
        request = nil
        releaseConnection()
        client.finished(self)
    }
}
