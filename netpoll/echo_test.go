package netpoll

// Echo is a Handler that writes back every byte it reads: the engine's
// example, and the server behind its tests and benchmarks.
type Echo struct {
	// Closed, if set, is called with each connection's close reason.
	Closed func(reason error)
}

// OnOpen implements Handler.
func (Echo) OnOpen(c *Conn) {}

// OnData implements Handler: everything read is written back.
func (Echo) OnData(c *Conn, data []byte) (int, error) {
	if err := c.Write(data); err != nil {
		return len(data), nil // the engine closes the connection (ErrBacklog)
	}
	return len(data), nil
}

// OnTimer implements Handler.
func (Echo) OnTimer(c *Conn) {}

// OnMessage implements Handler: a posted message's Data is written.
func (Echo) OnMessage(c *Conn, m *Message) { c.Write(m.Data) }

// OnClose implements Handler.
func (h Echo) OnClose(c *Conn, reason error) {
	if h.Closed != nil {
		h.Closed(reason)
	}
}
