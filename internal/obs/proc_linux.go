package obs

import (
	"github.com/prometheus/procfs"
)

// procReader reads /proc/self/stat, /proc/net/snmp and /proc/net/netstat
// (through the network namespace of this process).
type procReader struct {
	p   procfs.Proc
	err error
}

func newProcReader() *procReader {
	p, err := procfs.Self()
	return &procReader{p: p, err: err}
}

func (r *procReader) read(s *procSample) {
	readRusage(s)
	if r.err != nil {
		return
	}
	if st, err := r.p.Stat(); err == nil {
		s.haveProc = true
		s.rss = float64(st.ResidentMemory())
		s.threads = float64(st.NumThreads)
	}
	sn, err1 := r.p.Snmp()
	ns, err2 := r.p.Netstat()
	if err1 != nil || err2 != nil {
		return
	}
	s.haveTCP = true
	f := func(p *float64) float64 {
		if p == nil {
			return 0
		}
		return *p
	}
	s.retransSegs = f(sn.Tcp.RetransSegs)
	s.activeOpens = f(sn.Tcp.ActiveOpens)
	s.passiveOpens = f(sn.Tcp.PassiveOpens)
	s.currEstab = f(sn.Tcp.CurrEstab)
	s.inSegs = f(sn.Tcp.InSegs)
	s.outSegs = f(sn.Tcp.OutSegs)
	s.listenOverflows = f(ns.TcpExt.ListenOverflows)
	s.listenDrops = f(ns.TcpExt.ListenDrops)
	s.tcpTimeouts = f(ns.TcpExt.TCPTimeouts)
}
