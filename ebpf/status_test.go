package steer

import (
	"bytes"
	"flag"
	"path/filepath"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   Status
	}{
		{"empty", Status{Root: DefaultPinRoot}},
		{"dual-nic", Status{
			Root: DefaultPinRoot,
			Groups: []GroupStatus{
				{Name: "client", Program: ProgramInfo{ID: 41, Name: "edged_least", Type: "skreuseport", Tag: "0123456789abcdef"},
					Policy: PolicyLeast, SocketMap: "sockmap", Port: 1883, PID: 4242,
					Loops: []LoopStatus{{0, 0, 2500, 2498, 2}, {1, 1, 2501, 2501, 0}}},
				{Name: "admin", Program: ProgramInfo{ID: 42, Name: "edged_hash", Type: "skreuseport", Tag: "fedcba9876543210"},
					Policy: PolicyHash, SocketMap: "reuseportsockarray", Port: 8883, PID: 4242,
					Loops: []LoopStatus{{0, 1, 7, 3, 0}}, Misses: 1},
			},
			Lookups: []LookupStatus{{Name: "nic", Program: ProgramInfo{ID: 43, Name: "edged_niclookup", Type: "sklookup", Tag: "00aa00aa00aa00aa"},
				PID: 4242, Groups: []GroupStats{{"public", 2, 1883, 5001}, {"private", 3, 0, 7}}, Dropped: 1}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Render(&buf, tc.st); err != nil {
				t.Fatal(err)
			}
			testenv.Golden(t, filepath.Join("testdata", "status-"+tc.name+".golden"), buf.Bytes(), *update)
		})
	}
}
