package testenv

import (
	"bytes"
	"os"
	"testing"
	"unicode/utf8"
)

// Golden compares got with the golden file at path. With update (each
// package passes its own -update flag) it writes got to path instead and
// compares nothing. A missing or unreadable file fails t at once; a
// mismatch is reported with t.Errorf, showing both texts (or, for binary
// content, the sizes and the first differing byte).
func Golden(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("write golden file: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (go test -update writes it): %v", err)
	}
	if bytes.Equal(got, want) {
		return
	}
	if utf8.Valid(got) && utf8.Valid(want) {
		t.Errorf("%s differs from the output (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Errorf("%s differs from the output (go test -update rewrites it): got %d bytes, want %d, first difference at offset %d", path, len(got), len(want), i)
}
