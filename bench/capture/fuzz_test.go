package capture

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzRead: any input gives a Workload or an error, never a panic or a hang.
// Seeds: the crafted captures and the good session in both formats.
func FuzzRead(f *testing.F) {
	f.Add(pcapBytes(f, craftSession(f)))
	f.Add(pcapngBytes(f, craftSession(f)))
	files, _ := filepath.Glob(filepath.Join("testdata", "*.pcap"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := Read(bytes.NewReader(data), 1883)
		if err != nil {
			if !errors.Is(err, ErrBadCapture) && !errors.Is(err, ErrNoSessions) && !errors.Is(err, ErrLinkType) {
				t.Fatalf("Read error %q wraps no sentinel", err)
			}
			return
		}
		if len(w.Sessions) == 0 {
			t.Fatal("Read returned a workload without sessions and no error")
		}
	})
}
