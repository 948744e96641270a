// Package unsupported makes the packages' "not supported on this system"
// sentinels: each keeps its own message and identity (errors.Is against
// the package's sentinel works as before) and wraps errors.ErrUnsupported,
// the one sentinel a caller can test whatever the package.
package unsupported

import "errors"

// New returns a sentinel with message msg that wraps errors.ErrUnsupported.
func New(msg string) error { return &sentinel{msg} }

type sentinel struct{ msg string }

func (e *sentinel) Error() string { return e.msg }

func (e *sentinel) Unwrap() error { return errors.ErrUnsupported }
