package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// golden runs Golden on a recorder and returns what it reported.
func golden(t *testing.T, path string, got []byte, update bool) string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Golden(r, path, got, update)
	}()
	<-done
	return r.failed
}

func TestGolden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.golden")
	if msg := golden(t, path, []byte("a\n"), false); !strings.Contains(msg, "go test -update writes it") {
		t.Fatalf("missing file: %q", msg)
	}
	if msg := golden(t, path, []byte("a\n"), true); msg != "" {
		t.Fatalf("update: %q", msg)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "a\n" {
		t.Fatalf("update wrote %q, %v", b, err)
	}
	if msg := golden(t, path, []byte("a\n"), false); msg != "" {
		t.Fatalf("same content: %q", msg)
	}
	if msg := golden(t, path, []byte("b\n"), false); !strings.Contains(msg, "--- got\nb\n\n--- want\na\n") {
		t.Fatalf("text mismatch: %q", msg)
	}
	if msg := golden(t, path, []byte{'a', 0xff}, false); !strings.Contains(msg, "got 2 bytes, want 2, first difference at offset 1") {
		t.Fatalf("binary mismatch: %q", msg)
	}
}
