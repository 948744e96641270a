package bench

import (
	"encoding/binary"
	"strconv"
)

// A measured payload starts with a fixed header so the receiver can compute
// end-to-end latency and account for loss; the rest is padding.
//
//	0:2   magic "EB"
//	2:3   kind (kindMsg, kindTouch)
//	3:11  intended send time, Unix nanoseconds (open loop: the scheduled time)
//	11:19 sequence number within the pair
//	19:23 pair (or connection) index within the worker
const (
	payloadHeader = 23
	kindMsg       = 1
	kindTouch     = 2
)

func putHeader(b []byte, kind byte, ts int64, seq uint64, idx uint32) {
	b[0], b[1], b[2] = 'E', 'B', kind
	binary.BigEndian.PutUint64(b[3:], uint64(ts))
	binary.BigEndian.PutUint64(b[11:], seq)
	binary.BigEndian.PutUint32(b[19:], idx)
}

func getHeader(b []byte) (kind byte, ts int64, seq uint64, idx uint32, ok bool) {
	if len(b) < payloadHeader || b[0] != 'E' || b[1] != 'B' {
		return 0, 0, 0, 0, false
	}
	return b[2], int64(binary.BigEndian.Uint64(b[3:])), binary.BigEndian.Uint64(b[11:]), binary.BigEndian.Uint32(b[19:]), true
}

// appendClientID appends the client id of connection idx of worker w:
// "<prefix>.<w>.<idx>", valid as an edged user id ([0-9A-Za-z_.-]).
func appendClientID(b []byte, prefix string, w, idx int) []byte {
	b = append(b, prefix...)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(w), 10)
	b = append(b, '.')
	return strconv.AppendInt(b, int64(idx), 10)
}

// appendTopic appends the generic-broker topic of connection idx.
func appendTopic(b []byte, prefix string, w, idx int) []byte {
	b = append(b, "eb/"...)
	b = append(b, prefix...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(w), 10)
	b = append(b, '/')
	return strconv.AppendInt(b, int64(idx), 10)
}

// appendInboxTopic appends the messaging-profile topic that sends message
// seq to connection idx's user: "u/<user>/<mid>" (PROTOCOL.md).
func appendInboxTopic(b []byte, prefix string, w, idx int, seq uint64) []byte {
	b = append(b, "u/"...)
	b = appendClientID(b, prefix, w, idx)
	b = append(b, "/m"...)
	return strconv.AppendUint(b, seq, 10)
}

// fanoutTopic is the one topic of the fanout workload.
func fanoutTopic(prefix string) string { return "eb/" + prefix + "/fan" }
