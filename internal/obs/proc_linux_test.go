package obs

import (
	"testing"

	"github.com/prometheus/procfs"
)

func TestProcParse(t *testing.T) {
	snmp := []byte("Ip: Forwarding DefaultTTL\nIp: 2 64\n" +
		"Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n" +
		"Tcp: 1 200 120000 -1 3133208 3129520 3435 744676 32026 239839728 239475057 416752 0 742936 0\n" +
		"Udp: InDatagrams NoPorts\nUdp: 4977 0\n")
	got := map[string]float64{}
	set := func(name []byte, v float64) { got[string(name)] = v }
	if !procTable(snmp, "Tcp:", set) {
		t.Fatal("Tcp: table not found")
	}
	want := map[string]float64{"MaxConn": -1, "ActiveOpens": 3133208, "PassiveOpens": 3129520, "CurrEstab": 32026,
		"InSegs": 239839728, "OutSegs": 239475057, "RetransSegs": 416752, "InCsumErrors": 0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Tcp %s = %v, want %v", k, got[k], v)
		}
	}
	netstat := []byte("TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts\nTcpExt: 435 7 8 9\n" +
		"MPTcpExt: ListenOverflows\nMPTcpExt: 99\n")
	clear(got)
	if !procTable(netstat, "TcpExt:", set) || got["ListenOverflows"] != 7 || got["ListenDrops"] != 8 || got["TCPTimeouts"] != 9 {
		t.Errorf("TcpExt: %v", got)
	}
	if procTable(netstat, "Tcp:", set) {
		t.Error("found Tcp: in a file without it")
	}
	// The command may hold spaces and parentheses: fields count from the last ')'.
	stat := []byte("4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 7 0 12345 99999 321 18446744073709551615\n")
	if threads, rss, ok := statFields(stat); !ok || threads != 7 || rss != 321 {
		t.Errorf("statFields = %d, %d, %v; want 7, 321, true", threads, rss, ok)
	}
}

// TestProcReader reads this process: the same figures as procfs, and a
// sample allocates next to nothing (the reason for the parser).
func TestProcReader(t *testing.T) {
	r := newProcReader()
	var s procSample
	r.read(&s)
	if !s.haveProc || !s.haveTCP {
		t.Fatalf("haveProc %v, haveTCP %v on Linux", s.haveProc, s.haveTCP)
	}
	p, err := procfs.Self()
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if s.threads < 1 || s.rss <= 0 || s.rss > 2*float64(st.ResidentMemory()) || 2*s.rss < float64(st.ResidentMemory()) {
		t.Errorf("threads %v, rss %v; procfs: threads %d, rss %d", s.threads, s.rss, st.NumThreads, st.ResidentMemory())
	}
	n := testing.AllocsPerRun(20, func() { r.read(&s) })
	t.Logf("allocs per sample: %v", n)
	if n > 4 {
		t.Errorf("a sample allocates %v times, want at most 4 (the paths given to open)", n)
	}
}
