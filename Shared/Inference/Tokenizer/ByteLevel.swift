/// GPT-2's reversible map between bytes and printable code points. Byte-level
/// BPE vocabularies store every token as text in this alphabet, so that a space
/// appears as "Ġ" and a newline as "Ċ".
enum ByteLevel {
    /// The code point that stands for each byte.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The byte each code point of the alphabet stands for.
    static let scalarToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s.value] = UInt8(b) }
        return map
    }()

    /// Encodes raw bytes as byte-level text.
    static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let table = byteToScalar
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(table[Int(b)]) }
        return String(s)
    }

    /// Decodes byte-level text to raw bytes. Characters outside the alphabet are kept as UTF-8.
    static func decode(_ text: String) -> [UInt8] {
        let map = scalarToByte
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars {
            if let b = map[s.value] { out.append(b) } else { out.append(contentsOf: Array(String(s).utf8)) }
        }
        return out
    }
}
