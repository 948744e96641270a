package edge

import (
	"reflect"
	"testing"
	"unsafe"

	"github.com/edgedhq/edged/internal/slab"
)

// TestRecordLayout pins the per-connection costs behind the idle budget
// (DESIGN.md: <= 512 bytes per idle authenticated connection): the session
// record is 32 pointer-free bytes in a slab, and the router's record of a
// client is pointer-free too (its inbox, subscriptions and will live in a
// side table only while it has any), so the GC never scans idle clients; a
// v5 connection's conn5 is 16 pointer-free bytes.
func TestRecordLayout(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[session](), reflect.TypeFor[client](), reflect.TypeFor[conn5]()} {
		if slab.HasPointers(typ) {
			t.Errorf("%v holds pointers: the GC would scan every connection", typ)
		}
	}
	if n := unsafe.Sizeof(session{}); n != 32 {
		t.Errorf("session record is %d bytes, want 32", n)
	}
	if n := unsafe.Sizeof(conn5{}); n != 16 { // ARCHITECTURE.md, MQTT 5.0; the idle v5 budget
		t.Errorf("conn5 is %d bytes, want 16", n)
	}
	// With its only subscription inline and its id out of line (both in
	// recBytes): a device subscribed to its own topic has no clientExt.
	if n := unsafe.Sizeof(client{}); n > 72 {
		t.Errorf("client record is %d bytes, want <= 72", n)
	}
	// An idle subscribed session's extension: its subscriptions and will,
	// the inbox and transient state behind pointers (nil while empty).
	if n := unsafe.Sizeof(clientExt{}); n > 64 {
		t.Errorf("clientExt is %d bytes, want <= 64 (a 64-byte size class)", n)
	}
	// A topic-tree leaf with one subscriber: its name and subscription
	// inline, no child table (an 8-byte slot in its parent's).
	if n := unsafe.Sizeof(tnode{}); n > 48 {
		t.Errorf("tnode is %d bytes, want <= 48 (a 48-byte size class)", n)
	}
}
