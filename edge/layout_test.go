package edge

import (
	"reflect"
	"testing"
	"unsafe"

	"github.com/edgedhq/edged/netpoll"
)

// TestRecordLayout pins the per-connection costs behind the idle budget
// (DESIGN.md: <= 512 bytes per idle authenticated connection): the session
// record is 32 pointer-free bytes in a slab, and the router's entry for an
// idle client fits the 128-byte size class with its extension unallocated.
func TestRecordLayout(t *testing.T) {
	if netpoll.HasPointers(reflect.TypeFor[session]()) {
		t.Fatal("session record holds pointers: the GC would scan every connection")
	}
	if n := unsafe.Sizeof(session{}); n != 32 {
		t.Fatalf("session record is %d bytes, want 32", n)
	}
	if n := unsafe.Sizeof(client{}); n > 128 {
		t.Fatalf("client entry is %d bytes, want <= 128", n)
	}
}
