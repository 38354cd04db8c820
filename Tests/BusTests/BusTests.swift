import Bus
import CZeroMQ
import Foundation
import TestKit
import Testing

@Suite("ZeroMQ wrapper")
struct BusTests {
    @Test("ROUTER and DEALER exchange multipart messages; the poller times out")
    func routerDealer() throws {
        let context = BusContext()
        let router = try BusSocket(context, .router)
        try router.bind("inproc://rd")
        let dealer = try BusSocket(context, .dealer)
        try dealer.setRoutingID(Array("client-1".utf8))
        try dealer.connect("inproc://rd")
        try dealer.send([Data("a".utf8), Data(), Data(repeating: 7, count: 100_000)])
        let got = try #require(try router.receive(timeout: 5))
        #expect(got.count == 4 && got[0] == Data("client-1".utf8) && got[1] == Data("a".utf8) && got[2].isEmpty && got[3].count == 100_000)
        try router.send([got[0], Data("reply".utf8)])
        #expect(try dealer.receive(timeout: 5) == [Data("reply".utf8)])
        try router.send(to: got[0], [Data("second".utf8), Data("reply".utf8)])
        #expect(try dealer.receive(timeout: 5) == [Data("second".utf8), Data("reply".utf8)])
        let start = Date()
        #expect(try dealer.receive(timeout: 0.2) == nil)
        #expect(Date().timeIntervalSince(start) >= 0.15)
    }

    @Test("a ROUTER with mandatory routing reports an unknown peer")
    func unreachable() throws {
        let context = BusContext()
        let router = try BusSocket(context, .router)
        try router.setRouterMandatory(true)
        try router.bind("inproc://mandatory")
        #expect(throws: BusError.self) { try router.send([Data("nobody".utf8), Data("x".utf8)], wait: false) }
        do {
            try router.send([Data("nobody".utf8), Data("x".utf8)], wait: false)
        } catch {
            #expect(error.isUnreachable && error.description.contains("send"))
        }
        #expect(throws: BusError.self) { try router.send(to: Data("nobody".utf8), [Data("x".utf8)], wait: false) }
    }

    @Test("PUB and SUB filter by topic prefix")
    func pubSub() throws {
        let context = BusContext()
        let pub = try BusSocket(context, .pub)
        try pub.bind("inproc://events")
        let sub = try BusSocket(context, .sub)
        try sub.connect("inproc://events")
        try sub.subscribe("job.a")
        // The subscription is live once a message on it arrives: probe until one does.
        try waitUntil(5, "the subscription to reach the publisher") {
            _ = try pub.send([Data("job.a-probe".utf8), Data("probe".utf8)])
            return try sub.receive(timeout: 0.05) != nil
        }
        while try sub.receive(timeout: 0.05) != nil {} // the probes still on their way
        try pub.send([Data("job.b".utf8), Data("no".utf8)])
        try pub.send([Data("job.a1".utf8), Data("yes".utf8)])
        #expect(try sub.receive(timeout: 2) == [Data("job.a1".utf8), Data("yes".utf8)])
        #expect(try sub.receive(timeout: 0.1) == nil)
    }

    @Test("bad endpoints and options are Swift errors with libzmq's message")
    func errors() throws {
        let context = BusContext()
        let s = try BusSocket(context, .dealer)
        #expect(throws: BusError.self) { try s.bind("nonsense://x") }
        #expect(throws: BusError.self) { try s.connect("tcp://") }
        let unbindable = #expect(throws: BusError.self) { try s.bind("tcp://256.1.1.1:1") }
        #expect(unbindable.map { !$0.message.isEmpty && $0.description.hasPrefix("bind") } == true, "\(String(describing: unbindable))")
        #expect(throws: BusError.self) { try s.setOption(9999, Int32(1)) }
    }

    @Test("a peer sending more than the maximum message size is disconnected; others are served")
    func maximumMessageSize() throws {
        let context = BusContext()
        let router = try BusSocket(context, .router)
        try router.setMaximumMessageSize(1000)
        try router.bind("tcp://127.0.0.1:*")
        let endpoint = router.lastEndpoint
        #expect(endpoint.hasPrefix("tcp://127.0.0.1:"))
        let big = try BusSocket(context, .dealer)
        try big.connect(endpoint)
        try big.send([Data(count: 5000)])
        #expect(try router.receive(timeout: 0.5) == nil)
        let small = try BusSocket(context, .dealer)
        try small.connect(endpoint)
        try small.send([Data(count: 10)])
        #expect(try router.receive(timeout: 5)?.last?.count == 10)
    }

    @Test("CURVE: a client with the server's key talks; one with a wrong key gets nothing through")
    func curve() throws {
        #expect(BusContext.hasCurve)
        let server = try CurveKeyPair.generate()
        #expect(server.publicKey.count == 40 && server.secretKey.count == 40)
        #expect(try CurveKeyPair.publicKey(forSecret: server.secretKey) == server.publicKey)
        let context = BusContext()
        let router = try BusSocket(context, .router)
        try router.makeCurveServer(secretKey: server.secretKey)
        try router.bind("tcp://127.0.0.1:*")
        let good = try BusSocket(context, .dealer)
        try good.makeCurveClient(serverKey: server.publicKey, keys: try CurveKeyPair.generate())
        try good.connect(router.lastEndpoint)
        try good.send([Data("secret hello".utf8)])
        #expect(try router.receive(timeout: 5)?.last == Data("secret hello".utf8))
        let bad = try BusSocket(context, .dealer)
        try bad.makeCurveClient(serverKey: try CurveKeyPair.generate().publicKey, keys: try CurveKeyPair.generate())
        try bad.connect(router.lastEndpoint)
        try bad.send([Data("intruder".utf8)])
        let plain = try BusSocket(context, .dealer)
        try plain.connect(router.lastEndpoint)
        try plain.send([Data("plain".utf8)])
        #expect(try router.receive(timeout: 1) == nil)
    }
}
