import Testing
@testable import Throttle
