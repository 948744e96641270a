// Package echo is a netpoll.Handler that writes back every byte it reads:
// the server behind the tests and benchmarks of the packages above netpoll
// (the observability reporter, edgectl). netpoll's own tests carry the same
// handler in netpoll/echo_test.go: they cannot import this package, which
// imports netpoll.
package echo

import "github.com/edgedhq/edged/netpoll"

// Handler echoes. Its zero value is ready to use.
type Handler struct {
	// Closed, if set, is called with each connection's close reason.
	Closed func(reason error)
}

// OnOpen implements netpoll.Handler.
func (Handler) OnOpen(*netpoll.Conn) {}

// OnData implements netpoll.Handler: everything read is written back; a
// write that fails leaves the close to the engine (netpoll.ErrBacklog).
func (Handler) OnData(c *netpoll.Conn, data []byte) (int, error) {
	c.Write(data)
	return len(data), nil
}

// OnTimer implements netpoll.Handler.
func (Handler) OnTimer(*netpoll.Conn) {}

// OnMessage implements netpoll.Handler: a posted message's Data is written.
func (Handler) OnMessage(c *netpoll.Conn, m *netpoll.Message) { c.Write(m.Data) }

// OnClose implements netpoll.Handler.
func (h Handler) OnClose(_ *netpoll.Conn, reason error) {
	if h.Closed != nil {
		h.Closed(reason)
	}
}
