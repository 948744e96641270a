//go:build !linux

package bench

// runEngine needs epoll; other systems get ErrNotSupported.
func runEngine(Setup, <-chan Command, func(Tick)) error { return ErrNotSupported }
