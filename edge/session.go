package edge

// session is a connection's pointer-free record, in its loop's slab indexed
// by the connection's slot. 32 bytes; the GC never scans it.
type session struct {
	client    uint32 // registry index of the connected client; 0 before CONNACK
	epoch     uint32 // the client's epoch at CONNECT (takeover detection)
	keepalive uint16 // seconds, from CONNECT
	flags     uint16
	tokens    float32 // publish rate limiter
	last      int64   // unix nanos of the last token refill (both buckets)
	newInbox  float32 // new-inbox rate limiter (Config.NewInboxRate)
	src       uint32  // the source address's slot in Server.srcBuckets
}

const (
	sScanning uint16 = 1 << iota // on its loop's scanning list (retained scans pending)
)

const (
	sessChunkShift = 12
	sessChunkSize  = 1 << sessChunkShift
)

// sessions is one loop's session slab: chunks that never move, allocated on
// first use of a slot range.
type sessions struct {
	chunks []*[sessChunkSize]session
}

func (s *sessions) get(slot uint32) *session {
	ci := int(slot >> sessChunkShift)
	for ci >= len(s.chunks) {
		s.chunks = append(s.chunks, new([sessChunkSize]session))
	}
	return &s.chunks[ci][slot&(sessChunkSize-1)]
}
