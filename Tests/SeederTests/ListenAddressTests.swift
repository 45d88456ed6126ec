import Testing
@testable import Seeder

@Suite struct ListenAddressTests {
    @Test(arguments: ["127.0.0.1:9180", "[::1]:9180", "0.0.0.0:1", "[2001:db8::5]:65535"])
    func accepts(_ text: String) {
        #expect(ListenAddress(text)?.description == text)
    }

    @Test(arguments: ["127.0.0.1", "::1:9180", "[::1]9180", "localhost:80", "127.0.0.1:0", "127.0.0.1:65536", "[127.0.0.1]:80", ""])
    func refuses(_ text: String) {
        #expect(ListenAddress(text) == nil)
    }
}
