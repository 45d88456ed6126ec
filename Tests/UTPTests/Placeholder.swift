import Testing
@testable import UTP
