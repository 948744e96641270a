package unsupported

import (
	"errors"
	"fmt"
	"testing"
)

func TestNew(t *testing.T) {
	a, b := New("a: not supported"), New("b: not supported")
	wrapped := fmt.Errorf("open: %w", a)
	switch {
	case a.Error() != "a: not supported":
		t.Fatalf("message %q", a.Error())
	case !errors.Is(wrapped, errors.ErrUnsupported) || !errors.Is(b, errors.ErrUnsupported):
		t.Fatal("not errors.ErrUnsupported")
	case !errors.Is(wrapped, a) || errors.Is(wrapped, b):
		t.Fatal("a sentinel lost its identity")
	}
}
