import CLibevent
import Glibc

/// A small HTTP/1.1 server on the loop (libevent's evhttp) for the status endpoint:
/// GET and HEAD only, small bounded requests, answers built by the handler on the loop
/// thread. Loop thread only.
public final class HTTPServer {
    public struct Request: Sendable {
        public let method: String
        /// The path without the query.
        public let path: String
        public let query: String?
    }

    public struct Response: Sendable {
        public var status: Int32
        public var contentType: String
        public var body: [UInt8]

        public init(status: Int32, contentType: String, body: [UInt8]) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }

        public init(status: Int32, text: String) {
            self.init(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
        }
    }

    public struct BindError: Error, CustomStringConvertible {
        public let description: String
    }

    private var http: OpaquePointer?
    private let handler: (Request) -> Response
    public let address: SocketAddress
    public private(set) var boundPort: UInt16 = 0

    public init(loop: EventLoop, address: SocketAddress, handler: @escaping (Request) -> Response) throws(BindError) {
        self.handler = handler
        self.address = address
        guard let http = evhttp_new(loop.base) else { throw BindError(description: "cannot create an HTTP server") }
        self.http = http
        evhttp_set_allowed_methods(http, UInt16(EVHTTP_REQ_GET.rawValue | EVHTTP_REQ_HEAD.rawValue))
        evhttp_set_max_headers_size(http, 16 << 10)
        evhttp_set_max_body_size(http, 0)
        evhttp_set_timeout(http, 10)
        let context = Unmanaged.passUnretained(self).toOpaque()
        evhttp_set_gencb(http, { request, context in
            guard let request, let context else { return }
            Unmanaged<HTTPServer>.fromOpaque(context).takeUnretainedValue().serve(request)
        }, context)
        guard let bound = evhttp_bind_socket_with_handle(http, address.ipString, address.port) else {
            let reason = String(cString: strerror(errno))
            evhttp_free(http)
            self.http = nil
            throw BindError(description: "cannot listen on \(address): \(reason)")
        }
        boundPort = SocketAddress.local(of: evhttp_bound_socket_get_fd(bound))?.port ?? address.port
    }

    deinit { close() }

    public func close() {
        if let http { evhttp_free(http) }
        http = nil
    }

    private func serve(_ request: OpaquePointer) {
        let method = evhttp_request_get_command(request) == EVHTTP_REQ_HEAD ? "HEAD" : "GET"
        let uri = evhttp_request_get_uri(request).map { String(cString: $0) } ?? "/"
        let path: String
        let query: String?
        if let mark = uri.firstIndex(of: "?") {
            path = String(uri[..<mark])
            query = String(uri[uri.index(after: mark)...])
        } else {
            path = uri
            query = nil
        }
        let response = handler(Request(method: method, path: path, query: query))
        let headers = evhttp_request_get_output_headers(request)
        evhttp_add_header(headers, "Content-Type", response.contentType)
        evhttp_add_header(headers, "Cache-Control", "no-store")
        guard let body = evbuffer_new() else { return evhttp_send_error(request, 500, nil) }
        defer { evbuffer_free(body) }
        if method == "GET" {
            response.body.withUnsafeBytes { _ = evbuffer_add(body, $0.baseAddress, $0.count) }
        }
        evhttp_send_reply(request, response.status, Self.reason(response.status), body)
    }

    private static func reason(_ status: Int32) -> String {
        switch status {
        case 200: return "OK"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 503: return "Service Unavailable"
        default: return "Error"
        }
    }
}
