import Testing
@testable import OpenAI
