package testenv

import "encoding/binary"

// WSClientFrame builds a WebSocket frame as a client sends it (RFC 6455
// 5.2): b0 is FIN, the reserved bits and the opcode; the payload is masked
// with key and its length takes the shortest form.
func WSClientFrame(b0 byte, payload []byte, key [4]byte) []byte {
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xFFFF:
		f = binary.BigEndian.AppendUint16(append(f, 0x80|126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 0x80|127), uint64(n))
	}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i&3])
	}
	return f
}
