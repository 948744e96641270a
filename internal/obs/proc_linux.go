package obs

import (
	"bytes"
	"os"
	"syscall"
)

// procReader reads /proc/self/stat, /proc/net/snmp and /proc/net/netstat
// (through the network namespace of this process) into one reused buffer
// and parses them in place: a sample allocates next to nothing, so an idle
// server's sampler makes no garbage for its heap to grow with between
// collections. (Parsing with github.com/prometheus/procfs made ~54 kB of
// garbage a second; at 15,000 idle sessions that was ~120 B of RSS per
// session within 40 s, BENCHMARKS.md.)
type procReader struct {
	buf  []byte
	page float64
}

func newProcReader() *procReader {
	return &procReader{buf: make([]byte, 0, 8192), page: float64(os.Getpagesize())}
}

func (r *procReader) read(s *procSample) {
	readRusage(s)
	if b := r.load("/proc/self/stat"); b != nil {
		if threads, rss, ok := statFields(b); ok {
			s.haveProc = true
			s.rss = float64(rss) * r.page
			s.threads = float64(threads)
		}
	}
	counters := [...]struct {
		name string
		v    *float64
	}{ // Tcp: in /proc/net/snmp, TcpExt: in /proc/net/netstat
		{"RetransSegs", &s.retransSegs}, {"ActiveOpens", &s.activeOpens}, {"PassiveOpens", &s.passiveOpens},
		{"CurrEstab", &s.currEstab}, {"InSegs", &s.inSegs}, {"OutSegs", &s.outSegs},
		{"ListenOverflows", &s.listenOverflows}, {"ListenDrops", &s.listenDrops}, {"TCPTimeouts", &s.tcpTimeouts},
	}
	set := func(name []byte, v float64) {
		for _, c := range counters {
			if string(name) == c.name {
				*c.v = v
				return
			}
		}
	}
	tcp := r.load("/proc/self/net/snmp") != nil && procTable(r.buf, "Tcp:", set)
	ext := r.load("/proc/self/net/netstat") != nil && procTable(r.buf, "TcpExt:", set)
	s.haveTCP = tcp && ext
}

// statFields returns num_threads and rss (pages) from /proc/<pid>/stat:
// proc(5) numbers the fields from 1; after the command (field 2), which
// ends at the last ')', come state (3) on, num_threads is 20 and rss 24.
func statFields(b []byte) (threads, rss int64, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := b[i+1:]
	ok = true
	for n := 3; n <= 24 && ok; n++ {
		var tok []byte
		tok, f = procField(f)
		switch n {
		case 20:
			threads, ok = procInt(tok)
		case 24:
			rss, ok = procInt(tok)
		}
	}
	return threads, rss, ok
}

// load reads the file at path into r.buf and returns it; nil if it cannot
// be read (no /proc).
func (r *procReader) load(path string) []byte {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer syscall.Close(fd)
	b := r.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow; kept for the next read
		}
		n, err := syscall.Read(fd, b[len(b):cap(b)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil
		}
		if n == 0 {
			break
		}
		b = b[:len(b)+n]
	}
	r.buf = b
	return b
}

// procTable finds the counters of one protocol in a /proc/net/snmp-style file:
// a line of names "Tcp: A B C" followed by a line of values "Tcp: 1 2 3",
// and calls set for each name with its value. It reports whether the pair
// was there.
func procTable(b []byte, prefix string, set func(name []byte, v float64)) bool {
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte{'\n'})
		b = rest
		if !bytes.HasPrefix(line, []byte(prefix)) {
			continue
		}
		vals, _, _ := bytes.Cut(rest, []byte{'\n'})
		if !bytes.HasPrefix(vals, []byte(prefix)) {
			return false
		}
		names, vals := line[len(prefix):], vals[len(prefix):]
		for {
			var name, val []byte
			name, names = procField(names)
			val, vals = procField(vals)
			if len(name) == 0 || len(val) == 0 {
				return true
			}
			if v, ok := procInt(val); ok {
				set(name, float64(v))
			}
		}
	}
	return false
}

// procField returns the first space-separated field of b and the rest.
func procField(b []byte) (field, rest []byte) {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i:]
}

// procInt parses a decimal integer with an optional '-' (snmp's MaxConn
// is -1).
func procInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}
