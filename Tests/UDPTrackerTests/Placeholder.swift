import Testing
@testable import UDPTracker
