//go:build !linux && !darwin && !freebsd

package netpoll

import "net/netip"

func sysRead(fd int, p []byte) (int, error)            { return 0, ErrUnsupported }
func sysWrite(fd int, p []byte) (int, error)           { return 0, ErrUnsupported }
func sysClose(fd int) error                            { return ErrUnsupported }
func sysShutdownWrite(fd int) error                    { return ErrUnsupported }
func outQueued(fd int) int                             { return 0 }
func isAgain(err error) bool                           { return false }
func isTooManyFiles(err error) bool                    { return false }
func resolve(addr string) (netip.AddrPort, error)      { return netip.AddrPort{}, ErrUnsupported }
func listenTCP(netip.AddrPort, bool, int) (int, error) { return -1, ErrUnsupported }
func probeFree(netip.AddrPort) error                   { return ErrUnsupported }
func localAddr(fd int) (netip.AddrPort, error)         { return netip.AddrPort{}, ErrUnsupported }
func tuneConn(fd, sndbuf, rcvbuf int) error            { return ErrUnsupported }
func acceptConn(lfd int) (int, error)                  { return -1, ErrUnsupported }
func peerAddr(fd int) netip.AddrPort                   { return netip.AddrPort{} }
