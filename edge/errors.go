package edge

import "errors"

// Sentinel errors. Connection close reasons wrap one of the errReason values
// below (see reason.go); the functions of this package name the sentinels
// they return.
var (
	ErrNoSecret     = errors.New("edge: no auth secret")
	ErrBadToken     = errors.New("edge: bad token")
	ErrTokenExpired = errors.New("edge: token expired")
	ErrBadUserID    = errors.New("edge: invalid user id")
	ErrBadGroup     = errors.New("edge: invalid group name")
	ErrBadConfig    = errors.New("edge: invalid config")
	ErrClosed       = errors.New("edge: server closed")
	// ErrStoreUnavailable: a change was made in memory but the durable
	// store cannot write it yet (a full disk); the store retries.
	ErrStoreUnavailable = errors.New("edge: durable store unavailable")
)
