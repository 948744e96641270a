package capture

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Snaplen is the largest number of bytes kept of one packet: tcpdump's
// default. Loopback and GSO/GRO packets reach 64 KiB and more; a packet
// longer than Snaplen is written truncated, and Load refuses to reassemble it.
const Snaplen = 262144

// recvBuffer is the read buffer of the capture socket: bigger than Snaplen so
// that MSG_TRUNC reports the true length of an oversize packet.
const recvBuffer = Snaplen + 4096

// pollInterval bounds how long one read blocks (SO_RCVTIMEO), so Record sees
// its deadline and a cancelled context within this time.
const pollInterval = 100 * time.Millisecond

// RecordOptions configures Record.
type RecordOptions struct {
	Iface      string        // interface to capture on, such as "lo" or "eth0"
	Port       int           // TCP port of the server (either side of a segment)
	Duration   time.Duration // how long to capture (> 0)
	MaxPackets int           // stop after this many packets; 0: no limit
	Out        string        // pcap file to create (mode 0600: it holds payloads)
	// Ready, if set, is called once the socket is capturing.
	Ready func()
}

// RecordStats says what Record captured.
type RecordStats struct {
	Packets   int           // packets written
	Bytes     int64         // bytes of those packets on the wire
	Truncated int           // packets longer than Snaplen, written truncated
	Dropped   uint32        // packets the kernel dropped (socket buffer full)
	Elapsed   time.Duration // capture time
}

// packetSource is the OS-specific capture socket (record_linux.go).
type packetSource interface {
	// read waits up to pollInterval for one packet and copies it into buf;
	// n == 0 with a nil error means nothing arrived in time.
	read(buf []byte) (n, orig int, ts time.Time, err error)
	dropped() uint32
	close() error
}

// Record captures the TCP traffic to and from o.Port on o.Iface into the pcap
// file o.Out (link type Ethernet, nanosecond timestamps) until o.Duration has
// passed, o.MaxPackets were written or ctx is done; the file is complete in
// every case. The filter is a classic BPF program attached to the socket (no
// packet outside the filter reaches user space); on a loopback interface it
// also drops the outgoing copy of every packet, which AF_PACKET would
// otherwise deliver twice. The socket is opened on the calling OS thread's
// network namespace. Errors: ErrBadOptions, ErrNotSupported (not Linux),
// ErrLinkType (not an Ethernet or loopback interface), or the system's.
func Record(ctx context.Context, o RecordOptions) (st RecordStats, err error) {
	switch {
	case o.Iface == "":
		return st, fmt.Errorf("record: no interface: %w", ErrBadOptions)
	case o.Port < 1 || o.Port > 65535:
		return st, fmt.Errorf("record: port %d outside 1-65535: %w", o.Port, ErrBadOptions)
	case o.Duration <= 0:
		return st, fmt.Errorf("record: duration %v is not positive: %w", o.Duration, ErrBadOptions)
	case o.MaxPackets < 0:
		return st, fmt.Errorf("record: negative packet limit %d: %w", o.MaxPackets, ErrBadOptions)
	case o.Out == "":
		return st, fmt.Errorf("record: no output file: %w", ErrBadOptions)
	}
	src, err := openSource(o.Iface, o.Port)
	if err != nil {
		return st, err
	}
	defer func() {
		if cerr := src.close(); cerr != nil && err == nil {
			err = fmt.Errorf("close capture socket: %w", cerr)
		}
	}()
	f, err := os.OpenFile(o.Out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return st, fmt.Errorf("create capture file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close capture file: %w", cerr)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<16)
	w := pcapgo.NewWriterNanos(bw)
	if err := w.WriteFileHeader(Snaplen, layers.LinkTypeEthernet); err != nil {
		return st, fmt.Errorf("write capture header: %w", err)
	}
	if o.Ready != nil {
		o.Ready()
	}
	start := time.Now()
	deadline := start.Add(o.Duration)
	buf := make([]byte, recvBuffer)
	for time.Now().Before(deadline) && ctx.Err() == nil && (o.MaxPackets == 0 || st.Packets < o.MaxPackets) {
		n, orig, ts, err := src.read(buf)
		if err != nil {
			return st, err
		}
		if n == 0 {
			continue
		}
		if n > Snaplen {
			n = Snaplen
		}
		if n < orig {
			st.Truncated++
		}
		ci := gopacket.CaptureInfo{Timestamp: ts, CaptureLength: n, Length: orig}
		if err := w.WritePacket(ci, buf[:n]); err != nil {
			return st, fmt.Errorf("write packet %d: %w", st.Packets+1, err)
		}
		st.Packets++
		st.Bytes += int64(orig)
	}
	st.Elapsed = time.Since(start)
	st.Dropped = src.dropped()
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("write capture file: %w", err)
	}
	return st, nil
}
